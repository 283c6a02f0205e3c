// How pages talk to the avatar without loading it: they post what should be said and felt
// here; the avatar (three.js, loaded only when it is shown) listens. While no avatar is
// shown, nothing is loaded and the messages are dropped.

import { signal } from "./signal";

export type Emotion = "neutral" | "pleased" | "concerned" | "stern" | "surprised";

export type AvatarMessage =
  | { type: "say"; text: string }
  | { type: "emote"; emotion: Emotion; hold_ms?: number };

export const avatarOpen = signal(localStorage.getItem("aura.avatar") === "open");
avatarOpen.subscribe((open) => localStorage.setItem("aura.avatar", open ? "open" : "closed"));

type Listener = (m: AvatarMessage) => void;
const listeners = new Set<Listener>();

export function listenAvatar(f: Listener): () => void {
  listeners.add(f);
  return () => listeners.delete(f);
}

export function avatarSay(text: string): void {
  if (!text.trim()) return;
  for (const f of listeners) f({ type: "say", text });
}

export function avatarEmote(emotion: Emotion, hold_ms?: number): void {
  for (const f of listeners) f({ type: "emote", emotion, hold_ms });
}

/** The emotion a mission event calls for, if any. */
export function emotionFor(kind: string, body: any): Emotion | null {
  if (kind !== "mission.transition" && kind !== "mission.judged" && kind !== "mission.decided") return null;
  const ev = body?.event ?? {};
  if (kind === "mission.transition") {
    switch (ev.to) {
      case "escalated":
        return "concerned";
      case "completed":
        return "pleased";
      case "failed":
        return "stern";
      case "cancelled":
        return "stern";
      default:
        return null;
    }
  }
  const outcome = ev.decision?.outcome;
  const o = typeof outcome === "string" ? outcome : outcome && Object.keys(outcome)[0];
  return o === "deny" ? "stern" : null;
}
