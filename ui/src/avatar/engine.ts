// The avatar's runtime: the three.js scene, the render loop, speech playback with its
// viseme timeline, blinking, and emotions blended over time. The morph weights it shows
// are published on its container (`data-weights`, `data-viseme`, `data-speech-ms`) so that
// tests and assistive tools can read what the face is doing.
import * as THREE from "three";
import type { Emotion } from "../lib/avatarBus";
import { EXPRESSIONS, MORPHS, VISEME_SHAPES, glowMaterial, headGeometry, hologramMaterial } from "./head";
import { VISEMES, visemeWeights, timelineFromText, type VisemeCue } from "./lipsync";
import { NoSpeech, synthesize, type Speech } from "./speech";

const EMOTIONS: Record<Emotion, Partial<Record<(typeof EXPRESSIONS)[number], number>>> = {
  neutral: {},
  pleased: { smile: 0.9, browUp: 0.25 },
  concerned: { browUp: 0.55, frown: 0.45 },
  stern: { browDown: 0.85, frown: 0.35 },
  surprised: { surprise: 0.9 },
};

export interface VrmHandle {
  update(dt: number, weights: Record<string, number>): void;
  /** What the VRM shows: its expressions' values and its first morphed mesh's influences. */
  state(): { expressions: Record<string, number>; morphs: number[] };
  dispose(): void;
}

export class AvatarEngine {
  readonly renderer: THREE.WebGLRenderer;
  private scene = new THREE.Scene();
  private camera = new THREE.PerspectiveCamera(30, 1, 0.1, 50);
  private head: THREE.Mesh;
  private glow: THREE.Mesh;
  private eyes: THREE.Mesh[] = [];
  /** The mouth's glow, opened and widened with the visemes, on the face's surface. */
  private mouth: THREE.Mesh;
  private material = hologramMaterial();
  private wireMaterial = (() => {
    const m = hologramMaterial(new THREE.Color(0x7fe8ff));
    m.wireframe = true;
    m.uniforms.uIntensity.value = 0.35;
    return m;
  })();
  private clock = new THREE.Clock();
  private frame = 0;
  private resize: ResizeObserver;
  private timeline: VisemeCue[] = [];
  private speechStart = 0;
  private speechEnd = 0;
  private audioCtx: AudioContext | null = null;
  private usesAudio = false;
  private emotion: Emotion = "neutral";
  private emotionUntil = 0;
  private expr: Record<string, number> = {};
  private nextBlink = 2;
  private blinkT = -1;
  private queue: Promise<void> = Promise.resolve();
  private published = 0;
  /** Smoothed frame time; a slow renderer (software WebGL) gets fewer pixels instead of fewer frames. */
  private frameMs = 16;
  private pixelRatio = Math.min(devicePixelRatio, 2);
  vrm: VrmHandle | null = null;
  /** What the last utterance was driven by: "speech" (audio and timeline from the node) or "text". */
  mode: "idle" | "speech" | "text" = "idle";

  constructor(private host: HTMLElement) {
    this.renderer = new THREE.WebGLRenderer({ antialias: true, alpha: true, preserveDrawingBuffer: true });
    this.renderer.setPixelRatio(this.pixelRatio);
    this.renderer.domElement.setAttribute("role", "img");
    this.renderer.domElement.setAttribute("aria-label", "Aura's hologram head");
    host.appendChild(this.renderer.domElement);
    this.camera.position.set(0, 0.0, 6.6);
    const geometry = headGeometry(64);
    this.head = new THREE.Mesh(geometry, this.material);
    this.head.morphTargetInfluences = new Array(MORPHS.length).fill(0);
    this.head.morphTargetDictionary = Object.fromEntries(MORPHS.map((m, i) => [m, i]));
    // The hologram's wire lattice: the same geometry and morphs, drawn as lines, so the
    // face's features and the mouth's shapes read at a glance.
    const wire = new THREE.Mesh(geometry, this.wireMaterial);
    wire.morphTargetInfluences = this.head.morphTargetInfluences;
    wire.morphTargetDictionary = this.head.morphTargetDictionary;
    this.head.add(wire);
    this.glow = new THREE.Mesh(new THREE.SphereGeometry(1, 48, 32), glowMaterial());
    this.glow.scale.set(0.9, 1.25, 1);
    this.scene.add(this.head, this.glow);
    const eyeMat = new THREE.MeshBasicMaterial({ color: 0xbff4ff, transparent: true, opacity: 0.6, blending: THREE.AdditiveBlending, depthWrite: false, depthTest: false });
    for (const x of [-0.3, 0.3]) {
      const eye = new THREE.Mesh(new THREE.SphereGeometry(0.075, 24, 16), eyeMat);
      eye.scale.z = 0.5;
      eye.position.set(x, 0.12, 0.78);
      eye.renderOrder = 10;
      this.eyes.push(eye);
      this.head.add(eye);
    }
    this.mouth = new THREE.Mesh(
      new THREE.CircleGeometry(0.16, 48),
      new THREE.MeshBasicMaterial({ color: 0x9ff0ff, transparent: true, opacity: 0.75, blending: THREE.AdditiveBlending, depthWrite: false, depthTest: false }),
    );
    this.mouth.renderOrder = 10;
    this.mouth.position.set(0, -0.52, 0.86);
    this.head.add(this.mouth);
    const ring = new THREE.Mesh(
      new THREE.RingGeometry(0.95, 1.0, 96),
      new THREE.MeshBasicMaterial({ color: 0x4fd8ff, transparent: true, opacity: 0.35, side: THREE.DoubleSide, blending: THREE.AdditiveBlending }),
    );
    ring.rotation.x = Math.PI / 2;
    ring.position.y = -1.45;
    this.scene.add(ring);
    this.resize = new ResizeObserver(() => this.fit());
    this.resize.observe(host);
    this.fit();
    this.loop();
  }

  private fit(): void {
    const w = Math.max(1, this.host.clientWidth);
    const h = Math.max(1, this.host.clientHeight);
    this.renderer.setSize(w, h, false);
    this.camera.aspect = w / h;
    this.camera.updateProjectionMatrix();
  }

  /** Milliseconds into the current utterance, on the audio clock when there is audio. */
  speechMs(): number {
    if (this.usesAudio && this.audioCtx) return (this.audioCtx.currentTime - this.speechStart) * 1000;
    return performance.now() - this.speechStart;
  }

  private loop = (): void => {
    this.frame = requestAnimationFrame(this.loop);
    const dt = Math.min(0.1, this.clock.getDelta());
    const t = this.clock.elapsedTime;
    this.material.uniforms.uTime.value = t;
    this.wireMaterial.uniforms.uTime.value = t;
    const weights = this.currentWeights(dt, t);
    const infl = this.head.morphTargetInfluences!;
    MORPHS.forEach((m, i) => (infl[i] = weights[m] ?? 0));
    for (const eye of this.eyes) eye.scale.y = Math.max(0.05, 1 - (weights.blink ?? 0));
    let open = 0.08;
    let wide = 1;
    for (const [v, shape] of Object.entries(VISEME_SHAPES)) {
      const w = weights[v] ?? 0;
      open += w * ((shape.open ?? 0) * 0.9 + (shape.round ?? 0) * 0.3 - (shape.press ?? 0) * 0.08);
      wide += w * ((shape.wide ?? 0) * 0.45 - (shape.round ?? 0) * 0.4);
    }
    wide += (weights.smile ?? 0) * 0.3;
    open += (weights.surprise ?? 0) * 0.5;
    this.mouth.scale.set(Math.max(0.3, wide), Math.max(0.04, open), 1);
    this.mouth.position.y = -0.52 + (weights.smile ?? 0) * 0.02 - open * 0.06;
    this.head.rotation.y = Math.sin(t * 0.4) * 0.18;
    this.head.rotation.x = Math.sin(t * 0.27) * 0.05;
    this.head.position.y = Math.sin(t * 1.1) * 0.03;
    this.glow.rotation.copy(this.head.rotation);
    this.glow.position.copy(this.head.position);
    this.vrm?.update(dt, weights);
    const before = performance.now();
    this.renderer.render(this.scene, this.camera);
    this.adapt(performance.now() - before);
    this.publish(infl);
  };

  private adapt(ms: number): void {
    this.frameMs = this.frameMs * 0.8 + ms * 0.2;
    if (this.frameMs > 30 && this.pixelRatio > 0.3) {
      this.pixelRatio = Math.max(0.3, this.pixelRatio * 0.7);
      this.renderer.setPixelRatio(this.pixelRatio);
      this.fit();
      this.frameMs = 16;
    }
  }

  private currentWeights(dt: number, t: number): Record<string, number> {
    const speaking = this.timeline.length > 0 && this.speechMs() <= this.speechEnd;
    const vis = speaking ? visemeWeights(this.timeline, this.speechMs()) : {};
    if (!speaking && this.timeline.length) {
      this.timeline = [];
      this.mode = "idle";
    }
    if (this.emotionUntil && performance.now() > this.emotionUntil) {
      this.emotion = "neutral";
      this.emotionUntil = 0;
    }
    // Emotions ease in and out over about half a second.
    const target = EMOTIONS[this.emotion];
    const k = 1 - Math.exp(-dt / 0.18);
    for (const e of EXPRESSIONS) {
      if (e === "blink") continue;
      this.expr[e] = (this.expr[e] ?? 0) + ((target[e] ?? 0) - (this.expr[e] ?? 0)) * k;
    }
    // Blinks every few seconds, 150 ms each.
    if (t > this.nextBlink && this.blinkT < 0) this.blinkT = 0;
    let blink = 0;
    if (this.blinkT >= 0) {
      this.blinkT += dt;
      blink = Math.sin(Math.min(1, this.blinkT / 0.15) * Math.PI);
      if (this.blinkT > 0.15) {
        this.blinkT = -1;
        this.nextBlink = t + 2 + Math.random() * 3;
      }
    }
    return { ...vis, ...this.expr, blink };
  }

  private publish(infl: number[]): void {
    const now = performance.now();
    if (now - this.published < 30) return;
    this.published = now;
    const w: Record<string, number> = {};
    let best = "sil";
    let bestW = 0;
    MORPHS.forEach((m, i) => {
      if (infl[i] > 0.001) w[m] = Math.round(infl[i] * 1000) / 1000;
      if ((VISEMES as readonly string[]).includes(m) && infl[i] > bestW) {
        best = m;
        bestW = infl[i];
      }
    });
    this.host.dataset.weights = JSON.stringify(w);
    this.host.dataset.viseme = best;
    this.host.dataset.emotion = this.emotion;
    this.host.dataset.mode = this.mode;
    this.host.dataset.speechMs = this.timeline.length ? String(Math.round(this.speechMs())) : "";
    if (this.vrm) this.host.dataset.vrm = JSON.stringify(this.vrm.state());
    else delete this.host.dataset.vrm;
  }

  setEmotion(e: Emotion, holdMs?: number): void {
    this.emotion = e;
    this.emotionUntil = holdMs ? performance.now() + holdMs : 0;
  }

  /** Plays an utterance: audio on the audio clock, the face following its timeline. */
  async play(speech: Speech, mode: "speech" | "text"): Promise<void> {
    this.usesAudio = false;
    if (speech.audio) {
      try {
        this.audioCtx ??= new AudioContext();
        if (this.audioCtx.state === "suspended") await this.audioCtx.resume();
        const buf = await this.audioCtx.decodeAudioData(speech.audio.slice(0));
        const src = this.audioCtx.createBufferSource();
        src.buffer = buf;
        src.connect(this.audioCtx.destination);
        this.speechStart = this.audioCtx.currentTime + 0.05;
        src.start(this.speechStart);
        this.usesAudio = true;
      } catch {
        // Audio that cannot be played (no output device, a blocked context): the face
        // still follows the timeline on the page's clock.
      }
    }
    if (!this.usesAudio) this.speechStart = performance.now();
    this.timeline = speech.visemes.length ? speech.visemes : [{ t_ms: 0, viseme: "sil" }];
    this.speechEnd = speech.duration_ms;
    this.mode = mode;
    await new Promise((r) => setTimeout(r, speech.duration_ms + 100));
  }

  /** Says `text`: with the node's voice when it has one, else mimed from the text. */
  say(text: string): Promise<void> {
    this.queue = this.queue.then(async () => {
      try {
        await this.play(await synthesize(text.slice(0, 4000)), "speech");
      } catch (e) {
        if (!(e instanceof NoSpeech)) console.warn("speech failed:", (e as Error).message);
        await this.play(timelineFromText(text.slice(0, 600)), "text");
      }
    });
    return this.queue;
  }

  setHologramVisible(v: boolean): void {
    this.head.visible = v;
    this.glow.visible = v;
    for (const e of this.eyes) e.visible = v;
    this.mouth.visible = v;
  }

  get three(): { scene: THREE.Scene; camera: THREE.PerspectiveCamera } {
    return { scene: this.scene, camera: this.camera };
  }

  dispose(): void {
    cancelAnimationFrame(this.frame);
    this.resize.disconnect();
    this.vrm?.dispose();
    this.renderer.dispose();
    this.renderer.domElement.remove();
    this.audioCtx?.close();
  }
}
