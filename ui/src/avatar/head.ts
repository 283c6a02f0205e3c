// The hologram head, built procedurally (no model file, so no licence to track): a sphere
// shaped into a head, with morph targets for the 15 Oculus visemes, blink, brows, smile,
// frown and surprise. Every morph is a smooth displacement field around a feature (the
// mouth, the eyes, the brows), written as code.
import * as THREE from "three";
import { VISEMES } from "./lipsync";

export const EXPRESSIONS = ["blink", "browUp", "browDown", "smile", "frown", "surprise"] as const;
export const MORPHS = [...VISEMES, ...EXPRESSIONS] as readonly string[];

type V3 = [number, number, number];
const MOUTH: V3 = [0, -0.42, 0.86];
const EYE_L: V3 = [-0.3, 0.1, 0.78];
const EYE_R: V3 = [0.3, 0.1, 0.78];

/** A smooth bump: 1 at `c`, falling to 0 at radius `r` (per axis radii). */
function bump(p: THREE.Vector3, c: V3, r: V3): number {
  const dx = (p.x - c[0]) / r[0];
  const dy = (p.y - c[1]) / r[1];
  const dz = (p.z - c[2]) / r[2];
  const d2 = dx * dx + dy * dy + dz * dz;
  return d2 >= 1 ? 0 : (1 - d2) * (1 - d2);
}

/** The base shape: a sphere stretched into a skull, jaw and chin, with a nose and eye sockets. */
function shapeHead(p: THREE.Vector3): void {
  p.y *= 1.2;
  // A rounder cranium; narrower at the jaw.
  if (p.y > 0) p.x *= 1 + 0.06 * Math.sin(Math.min(1, p.y) * Math.PI);
  const jaw = Math.max(0, -p.y - 0.1) * 0.3;
  p.x *= 0.86 - jaw;
  p.z *= 0.95 - jaw * 0.4;
  // Chin forward, back of the head rounder.
  p.z += bump(p, [0, -0.95, 0.5], [0.35, 0.3, 0.5]) * 0.12;
  p.z += bump(p, [0, -0.05, 0.95], [0.12, 0.22, 0.4]) * 0.2; // nose
  p.z -= bump(p, EYE_L, [0.17, 0.12, 0.3]) * 0.09;
  p.z -= bump(p, EYE_R, [0.17, 0.12, 0.3]) * 0.09;
  p.z += bump(p, [0, 0.42, 0.8], [0.5, 0.18, 0.4]) * 0.05; // brow ridge
}

/** The primitive mouth shapes that visemes mix. */
export interface MouthShape {
  open?: number; // jaw and lower lip down
  wide?: number; // corners out
  round?: number; // lips forward and in
  press?: number; // lips together and in
  tuck?: number; // lower lip up under the teeth (f, v)
  tongue?: number; // between the teeth (th)
}

export const VISEME_SHAPES: Record<string, MouthShape> = {
  sil: {},
  PP: { press: 1 },
  FF: { tuck: 1, open: 0.1 },
  TH: { tongue: 1, open: 0.25 },
  DD: { open: 0.3, wide: 0.3 },
  kk: { open: 0.4, wide: 0.2 },
  CH: { round: 0.5, open: 0.3 },
  SS: { wide: 0.6, open: 0.1 },
  nn: { open: 0.2, wide: 0.2 },
  RR: { round: 0.4, open: 0.2 },
  aa: { open: 1 },
  E: { open: 0.5, wide: 0.7 },
  I: { open: 0.25, wide: 0.9 },
  O: { open: 0.7, round: 0.8 },
  U: { round: 1, open: 0.2 },
};

function mouthDelta(p: THREE.Vector3, s: MouthShape, out: THREE.Vector3): void {
  out.set(0, 0, 0);
  const near = bump(p, MOUTH, [0.42, 0.3, 0.4]);
  if (!near) return;
  const below = p.y < MOUTH[1] ? 1 : 0.25;
  const side = (p.x - MOUTH[0]) / 0.42;
  if (s.open) out.y -= s.open * 0.2 * near * below;
  if (s.open) out.z -= s.open * 0.04 * near * below;
  if (s.wide) out.x += s.wide * 0.1 * side * near;
  if (s.round) {
    out.x -= s.round * 0.09 * side * near;
    out.z += s.round * 0.08 * near;
  }
  if (s.press) {
    out.y += (p.y < MOUTH[1] ? 0.03 : -0.02) * s.press * near;
    out.z -= 0.02 * s.press * near;
  }
  if (s.tuck) out.y += p.y < MOUTH[1] ? 0.04 * s.tuck * near : 0;
  if (s.tongue) out.z += 0.03 * s.tongue * bump(p, MOUTH, [0.15, 0.08, 0.3]);
}

function expressionDelta(name: string, p: THREE.Vector3, out: THREE.Vector3): void {
  out.set(0, 0, 0);
  const brows = bump(p, [-0.3, 0.36, 0.8], [0.25, 0.14, 0.4]) + bump(p, [0.3, 0.36, 0.8], [0.25, 0.14, 0.4]);
  const lids = bump(p, [EYE_L[0], EYE_L[1] + 0.05, EYE_L[2]], [0.19, 0.12, 0.35]) + bump(p, [EYE_R[0], EYE_R[1] + 0.05, EYE_R[2]], [0.19, 0.12, 0.35]);
  const corners = bump(p, [-0.24, MOUTH[1], 0.78], [0.16, 0.16, 0.35]) - bump(p, [0.24, MOUTH[1], 0.78], [0.16, 0.16, 0.35]);
  const cornersAbs = Math.abs(corners);
  switch (name) {
    case "blink":
      out.y -= 0.1 * lids;
      out.z += 0.05 * lids;
      break;
    case "browUp":
      out.y += 0.07 * brows;
      break;
    case "browDown":
      out.y -= 0.05 * brows;
      out.x -= 0.03 * Math.sign(p.x) * brows;
      break;
    case "smile":
      out.y += 0.07 * cornersAbs;
      out.x -= 0.05 * corners;
      out.z -= 0.03 * cornersAbs;
      break;
    case "frown":
      out.y -= 0.06 * cornersAbs;
      break;
    case "surprise":
      out.y += 0.08 * brows - 0.12 * bump(p, MOUTH, [0.42, 0.3, 0.4]) * (p.y < MOUTH[1] ? 1 : 0.2);
      out.y += 0.03 * lids;
      break;
  }
}

/** The head's geometry with every morph target (relative displacements). */
export function headGeometry(detail = 96): THREE.BufferGeometry {
  const g = new THREE.SphereGeometry(1, detail, Math.round(detail * 0.75));
  const pos = g.attributes.position as THREE.BufferAttribute;
  const p = new THREE.Vector3();
  for (let i = 0; i < pos.count; i++) {
    p.fromBufferAttribute(pos, i);
    shapeHead(p);
    pos.setXYZ(i, p.x, p.y, p.z);
  }
  g.computeVertexNormals();
  const targets: THREE.BufferAttribute[] = [];
  const d = new THREE.Vector3();
  for (const name of MORPHS) {
    const arr = new Float32Array(pos.count * 3);
    for (let i = 0; i < pos.count; i++) {
      p.fromBufferAttribute(pos, i);
      if (name in VISEME_SHAPES) mouthDelta(p, VISEME_SHAPES[name], d);
      else expressionDelta(name, p, d);
      arr[i * 3] = d.x;
      arr[i * 3 + 1] = d.y;
      arr[i * 3 + 2] = d.z;
    }
    const attr = new THREE.BufferAttribute(arr, 3);
    attr.name = name;
    targets.push(attr);
  }
  g.morphAttributes.position = targets;
  g.morphTargetsRelative = true;
  return g;
}

/** The hologram: a fresnel rim, moving scanlines, a flicker, drawn additively. */
export function hologramMaterial(color = new THREE.Color(0x4fd8ff)): THREE.ShaderMaterial {
  return new THREE.ShaderMaterial({
    uniforms: { uTime: { value: 0 }, uColor: { value: color }, uIntensity: { value: 1 } },
    vertexShader: /* glsl */ `
      #include <common>
      #include <morphtarget_pars_vertex>
      varying vec3 vNormalW;
      varying vec3 vViewDir;
      varying vec3 vPos;
      void main() {
        #include <beginnormal_vertex>
        #include <begin_vertex>
        #include <morphtarget_vertex>
        vec4 world = modelMatrix * vec4(transformed, 1.0);
        vPos = transformed;
        vNormalW = normalize(mat3(modelMatrix) * objectNormal);
        vViewDir = normalize(cameraPosition - world.xyz);
        gl_Position = projectionMatrix * viewMatrix * world;
      }`,
    fragmentShader: /* glsl */ `
      uniform float uTime;
      uniform vec3 uColor;
      uniform float uIntensity;
      varying vec3 vNormalW;
      varying vec3 vViewDir;
      varying vec3 vPos;
      float hash(float n) { return fract(sin(n) * 43758.5453); }
      void main() {
        float fresnel = pow(1.0 - abs(dot(normalize(vNormalW), vViewDir)), 2.2);
        float scan = 0.55 + 0.45 * sin(vPos.y * 90.0 - uTime * 5.0);
        float band = smoothstep(0.0, 0.08, abs(fract(vPos.y * 0.5 - uTime * 0.15) - 0.5));
        float flicker = 0.88 + 0.12 * hash(floor(uTime * 24.0));
        float a = (0.12 + 1.1 * fresnel) * (0.6 + 0.4 * scan) * mix(1.6, 1.0, band) * flicker * uIntensity;
        gl_FragColor = vec4(uColor * a, a);
      }`,
    transparent: true,
    depthWrite: false,
    blending: THREE.AdditiveBlending,
    side: THREE.DoubleSide,
  });
}

/** The additive halo around the head: a back-facing shell that glows toward its edge. */
export function glowMaterial(color = new THREE.Color(0x4fd8ff)): THREE.ShaderMaterial {
  return new THREE.ShaderMaterial({
    uniforms: { uColor: { value: color } },
    vertexShader: /* glsl */ `
      varying float vRim;
      void main() {
        vec3 n = normalize(normalMatrix * normal);
        vec4 mv = modelViewMatrix * vec4(position * 1.08, 1.0);
        vRim = pow(1.0 - abs(dot(n, normalize(-mv.xyz))), 3.0);
        gl_Position = projectionMatrix * mv;
      }`,
    fragmentShader: /* glsl */ `
      uniform vec3 uColor;
      varying float vRim;
      void main() { gl_FragColor = vec4(uColor * vRim * 0.6, vRim * 0.6); }`,
    transparent: true,
    depthWrite: false,
    blending: THREE.AdditiveBlending,
    side: THREE.BackSide,
  });
}
