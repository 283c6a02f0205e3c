// Hash routing (`#/missions/ID`): the node serves one page at `/`, so deep links need no
// server routes and can never shadow an API path.

import { signal } from "./signal";

function current(): string[] {
  return location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
}

export const route = signal<string[]>(current());
addEventListener("hashchange", () => route.set(current()));

export function go(...parts: string[]): void {
  location.hash = "#/" + parts.map(encodeURIComponent).join("/");
}
