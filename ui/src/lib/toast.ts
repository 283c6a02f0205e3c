// Short notices for the user, announced to screen readers through a live region.
import { signal } from "./signal";

export interface Toast {
  id: number;
  text: string;
  kind: "info" | "error";
}
export const toasts = signal<Toast[]>([]);
let next = 1;
export function toast(text: string, kind: "info" | "error" = "info"): void {
  const t = { id: next++, text, kind };
  toasts.set([...toasts.get(), t]);
  setTimeout(() => toasts.set(toasts.get().filter((x) => x !== t)), kind === "error" ? 8000 : 4000);
}
export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
