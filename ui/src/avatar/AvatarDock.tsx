// The avatar docked beside every page: it narrates missions and speaks chat answers.
import { avatarOpen } from "../lib/avatarBus";
import { Viewport } from "./Viewport";

export default function AvatarDock() {
  return (
    <div class="dock">
      <div class="dock-head">
        <span>Aura</span>
        <button type="button" class="ghost small-btn" onClick={() => avatarOpen.set(false)} aria-label="Hide the avatar">
          ×
        </button>
      </div>
      <Viewport class="docked" />
    </div>
  );
}
