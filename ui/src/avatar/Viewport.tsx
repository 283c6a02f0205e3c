// The avatar's viewport: mounts the engine, and follows what the pages ask it to say and
// feel (lib/avatarBus).
import { useEffect, useRef } from "preact/hooks";
import { listenAvatar } from "../lib/avatarBus";
import { AvatarEngine } from "./engine";

export function Viewport({ onEngine, class: cls }: { onEngine?: (e: AvatarEngine | null) => void; class?: string }) {
  const host = useRef<HTMLDivElement>(null);
  useEffect(() => {
    let engine: AvatarEngine | null = null;
    try {
      engine = new AvatarEngine(host.current!);
    } catch (e) {
      host.current!.textContent = `This browser cannot draw the avatar (WebGL): ${(e as Error).message}`;
      return;
    }
    onEngine?.(engine);
    const off = listenAvatar((m) => {
      if (m.type === "say") engine!.say(m.text);
      else engine!.setEmotion(m.emotion, m.hold_ms);
    });
    return () => {
      off();
      onEngine?.(null);
      engine!.dispose();
    };
  }, []);
  return <div ref={host} class={`viewport ${cls ?? ""}`} data-testid="avatar" />;
}
