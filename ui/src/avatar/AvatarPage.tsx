// The avatar's own page: the hologram large, what it says and feels, and an optional VRM.
import { useRef, useState } from "preact/hooks";
import type { Emotion } from "../lib/avatarBus";
import { useCommands } from "../lib/commands";
import { errorText, toast } from "../lib/toast";
import type { AvatarEngine } from "./engine";
import { Viewport } from "./Viewport";

const EMOTIONS: Emotion[] = ["neutral", "pleased", "concerned", "stern", "surprised"];

export default function AvatarPage() {
  const engine = useRef<AvatarEngine | null>(null);
  const [text, setText] = useState("Hello. I am Aura. Every step I take is recorded, signed and replayable.");
  const [vrmName, setVrmName] = useState<string | null>(null);
  const say = () => engine.current?.say(text);
  useCommands(
    [
      { id: "avatar.say", title: "Avatar: say the text", group: "Avatar", run: say },
      ...EMOTIONS.map((e) => ({ id: `avatar.${e}`, title: `Avatar: look ${e}`, group: "Avatar", run: () => engine.current?.setEmotion(e, 5000) })),
    ],
    [text],
  );
  return (
    <section>
      <h1>Avatar</h1>
      <div class="avatar-layout">
        <Viewport class="large" onEngine={(e) => (engine.current = e)} />
        <form
          class="params"
          aria-label="Avatar controls"
          onSubmit={(e) => {
            e.preventDefault();
            say();
          }}
        >
          <label>
            Say
            <textarea id="avatar-text" rows={4} value={text} onInput={(e) => setText((e.target as HTMLTextAreaElement).value)} />
          </label>
          <button type="submit" class="primary">
            Speak
          </button>
          <fieldset>
            <legend>Emotion</legend>
            <div class="row">
              {EMOTIONS.map((e) => (
                <button type="button" onClick={() => engine.current?.setEmotion(e, 6000)}>
                  {e}
                </button>
              ))}
            </div>
          </fieldset>
          <label>
            Your VRM avatar (optional, stays in this browser)
            <input
              type="file"
              accept=".vrm"
              onChange={async (e) => {
                const f = (e.target as HTMLInputElement).files?.[0];
                const eng = engine.current;
                if (!f || !eng) return;
                try {
                  const { loadVrm } = await import("./vrm");
                  eng.vrm?.dispose();
                  eng.vrm = await loadVrm(f, eng.three.scene);
                  eng.setHologramVisible(false);
                  setVrmName(f.name);
                } catch (err) {
                  toast(errorText(err), "error");
                }
              }}
            />
          </label>
          {vrmName && (
            <button
              type="button"
              onClick={() => {
                engine.current?.vrm?.dispose();
                if (engine.current) engine.current.vrm = null;
                engine.current?.setHologramVisible(true);
                setVrmName(null);
              }}
            >
              Back to the hologram (unload {vrmName})
            </button>
          )}
          <p class="small">
            Speech comes from the node's <code>/v1/audio/speech</code> with a viseme timeline (docs/ui.md); a node without it has the avatar mime the text.
          </p>
        </form>
      </div>
    </section>
  );
}
