// The command palette's registry: every action of the UI is a command, so Ctrl-K reaches
// all of them. Pages register their own while they are shown.

import { signal } from "./signal";
import { useEffect } from "preact/hooks";

export interface Command {
  id: string;
  title: string;
  group: string;
  /** Words that also match, besides the title. */
  keywords?: string;
  run: () => void | Promise<void>;
}

export const commands = signal<Command[]>([]);

export function register(list: Command[]): () => void {
  const ids = new Set(list.map((c) => c.id));
  commands.set([...commands.get().filter((c) => !ids.has(c.id)), ...list]);
  return () => commands.set(commands.get().filter((c) => !ids.has(c.id) || !list.includes(c)));
}

/** Registers `list` while the calling component is mounted. */
export function useCommands(list: Command[], deps: unknown[]): void {
  useEffect(() => register(list), deps);
}

/** Ranks commands for a query: every word must appear; earlier matches rank higher. */
export function search(all: Command[], query: string): Command[] {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  if (!words.length) return all;
  const scored: [number, Command][] = [];
  for (const c of all) {
    const hay = `${c.title} ${c.group} ${c.keywords ?? ""}`.toLowerCase();
    let score = 0;
    let ok = true;
    for (const w of words) {
      const at = hay.indexOf(w);
      if (at < 0) {
        ok = false;
        break;
      }
      score += at;
    }
    if (ok) scored.push([score, c]);
  }
  return scored.sort((a, b) => a[0] - b[0]).map((s) => s[1]);
}
