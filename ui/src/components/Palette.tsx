// The command palette (Ctrl-K): every action of the UI, searchable, run from the keyboard.
// An ARIA combobox over a listbox, in a modal dialog.

import { useEffect, useRef, useState } from "preact/hooks";
import { commands, search } from "../lib/commands";
import { signal, useSignal } from "../lib/signal";
import { errorText, toast } from "../lib/toast";

export const paletteOpen = signal(false);

export function Palette() {
  const open = useSignal(paletteOpen);
  const all = useSignal(commands);
  const [query, setQuery] = useState("");
  const [active, setActive] = useState(0);
  const input = useRef<HTMLInputElement>(null);
  const before = useRef<Element | null>(null);

  useEffect(() => {
    if (open) {
      before.current = document.activeElement;
      setQuery("");
      setActive(0);
      setTimeout(() => input.current?.focus(), 0);
    } else if (before.current instanceof HTMLElement) {
      before.current.focus();
    }
  }, [open]);

  if (!open) return null;
  const found = search(all, query).slice(0, 50);
  const run = async (i: number) => {
    const c = found[i];
    if (!c) return;
    paletteOpen.set(false);
    try {
      await c.run();
    } catch (e) {
      toast(errorText(e), "error");
    }
  };
  return (
    <div class="modal-backdrop" onClick={() => paletteOpen.set(false)}>
      <div
        class="modal palette"
        role="dialog"
        aria-modal="true"
        aria-label="Command palette"
        onClick={(e) => e.stopPropagation()}
      >
        <input
          ref={input}
          type="text"
          role="combobox"
          aria-expanded="true"
          aria-controls="palette-list"
          aria-activedescendant={found[active] ? `cmd-${active}` : undefined}
          aria-label="Type a command"
          placeholder="Type a command…"
          value={query}
          onInput={(e) => {
            setQuery((e.target as HTMLInputElement).value);
            setActive(0);
          }}
          onKeyDown={(e) => {
            if (e.key === "ArrowDown") {
              e.preventDefault();
              setActive((a) => Math.min(a + 1, found.length - 1));
            } else if (e.key === "ArrowUp") {
              e.preventDefault();
              setActive((a) => Math.max(a - 1, 0));
            } else if (e.key === "Enter") {
              e.preventDefault();
              run(active);
            } else if (e.key === "Escape") {
              e.preventDefault();
              paletteOpen.set(false);
            }
          }}
        />
        <ul id="palette-list" role="listbox" aria-label="Commands">
          {found.map((c, i) => (
            <li
              id={`cmd-${i}`}
              role="option"
              aria-selected={i === active}
              class={i === active ? "active" : ""}
              onMouseEnter={() => setActive(i)}
              onClick={() => run(i)}
            >
              <span>{c.title}</span>
              <small>{c.group}</small>
            </li>
          ))}
          {!found.length && (
            <li role="option" aria-selected="false" aria-disabled="true">
              No command matches
            </li>
          )}
        </ul>
      </div>
    </div>
  );
}
