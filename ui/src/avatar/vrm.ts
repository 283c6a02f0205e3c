// An optional VRM avatar (a file the user supplies), driven by the same visemes and
// emotions as the hologram: Oculus visemes map onto VRM's five vowel expressions, the
// emotions onto its presets. Loaded only when a file is chosen.
import * as THREE from "three";
import { GLTFLoader } from "three/examples/jsm/loaders/GLTFLoader.js";
import { VRMLoaderPlugin, VRMUtils, type VRM } from "@pixiv/three-vrm";
import type { VrmHandle } from "./engine";

const VOWELS: Record<string, [string, number][]> = {
  aa: [["aa", 1]],
  E: [["ee", 1]],
  I: [["ih", 1]],
  O: [["oh", 1]],
  U: [["ou", 1]],
  CH: [["ou", 0.5], ["ih", 0.3]],
  SS: [["ih", 0.5]],
  DD: [["aa", 0.3], ["ih", 0.2]],
  kk: [["aa", 0.4]],
  nn: [["aa", 0.2]],
  RR: [["ou", 0.4]],
  TH: [["aa", 0.25]],
  FF: [["ih", 0.2]],
  PP: [],
  sil: [],
};

export async function loadVrm(file: File, scene: THREE.Scene): Promise<VrmHandle> {
  const loader = new GLTFLoader();
  loader.register((parser) => new VRMLoaderPlugin(parser));
  const url = URL.createObjectURL(file);
  try {
    const gltf = await loader.loadAsync(url);
    const vrm = gltf.userData.vrm as VRM | undefined;
    if (!vrm) throw new Error("this file is not a VRM avatar");
    VRMUtils.rotateVRM0(vrm);
    scene.add(vrm.scene);
    // Frame the head: VRMs stand with the head about 1.4-1.6 m up.
    const head = vrm.humanoid?.getNormalizedBoneNode("head");
    const y = head ? head.getWorldPosition(new THREE.Vector3()).y : 1.4;
    vrm.scene.position.set(0, -y, 2.2);
    const em = vrm.expressionManager;
    // The first mesh with morph targets: what the expressions finally move, published for
    // tests and assistive tools beside the hologram's own weights.
    let morphed: THREE.Mesh | undefined;
    vrm.scene.traverse((o) => {
      if (!morphed && o instanceof THREE.Mesh && o.morphTargetInfluences?.length) morphed = o;
    });
    const round = (x: number) => Math.round(x * 1000) / 1000;
    return {
      state() {
        const expressions: Record<string, number> = {};
        for (const name of ["aa", "ee", "ih", "oh", "ou", "blink", "happy", "angry", "sad", "surprised"]) {
          const v = em?.getValue(name);
          if (v) expressions[name] = round(v);
        }
        return { expressions, morphs: (morphed?.morphTargetInfluences ?? []).map(round) };
      },
      update(dt, w) {
        if (em) {
          const mix: Record<string, number> = { aa: 0, ee: 0, ih: 0, oh: 0, ou: 0 };
          for (const [v, weight] of Object.entries(w)) {
            for (const [vowel, k] of VOWELS[v] ?? []) mix[vowel] = Math.min(1, mix[vowel] + weight * k);
          }
          for (const [k, v] of Object.entries(mix)) em.setValue(k, v);
          em.setValue("blink", w.blink ?? 0);
          em.setValue("happy", w.smile ?? 0);
          em.setValue("angry", w.browDown ?? 0);
          em.setValue("sad", (w.frown ?? 0) * 0.8);
          em.setValue("surprised", w.surprise ?? 0);
        }
        vrm.update(dt);
      },
      dispose() {
        scene.remove(vrm.scene);
        VRMUtils.deepDispose(vrm.scene);
      },
    };
  } finally {
    URL.revokeObjectURL(url);
  }
}
