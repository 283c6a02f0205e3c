// A minimal VRM 1.0 avatar written by the test itself (no asset with a licence to track):
// a GLB whose glTF has the humanoid skeleton VRM requires, one mesh (a single triangle)
// with one morph target per expression, and the VRMC_vrm extension binding the expressions
// the avatar drives (the five vowels, blink and the emotions) to those morph targets.
// Morph target i moves when expression EXPRESSIONS[i] is set, so a test can read the mesh
// and know which expression moved it.

export const EXPRESSIONS = ["aa", "ee", "ih", "oh", "ou", "blink", "happy", "angry", "sad", "surprised"] as const;

// The bones VRM 1.0 requires of every humanoid, chained parent to child (their places do
// not matter to the test, only that the loader finds them).
const BONES = [
  "hips",
  "spine",
  "head",
  "leftUpperArm",
  "leftLowerArm",
  "leftHand",
  "rightUpperArm",
  "rightLowerArm",
  "rightHand",
  "leftUpperLeg",
  "leftLowerLeg",
  "leftFoot",
  "rightUpperLeg",
  "rightLowerLeg",
  "rightFoot",
];

export function minimalVrm(): Buffer {
  // Binary data: the triangle's positions, then one displacement set per morph target.
  const positions = [0, 1.4, 0, 0.1, 1.5, 0, -0.1, 1.5, 0];
  const floats: number[] = [...positions];
  for (let i = 0; i < EXPRESSIONS.length; i++) floats.push(0, 0.01 * (i + 1), 0, 0, 0, 0, 0, 0, 0);
  const bin = Buffer.alloc(floats.length * 4);
  floats.forEach((f, i) => bin.writeFloatLE(f, i * 4));

  const bytesPerSet = 9 * 4;
  const bufferViews = [{ buffer: 0, byteOffset: 0, byteLength: bytesPerSet }];
  const accessors: object[] = [{ bufferView: 0, componentType: 5126, count: 3, type: "VEC3", min: [-0.1, 1.4, 0], max: [0.1, 1.5, 0] }];
  const targets: { POSITION: number }[] = [];
  EXPRESSIONS.forEach((_, i) => {
    bufferViews.push({ buffer: 0, byteOffset: bytesPerSet * (i + 1), byteLength: bytesPerSet });
    const dy = 0.01 * (i + 1);
    accessors.push({ bufferView: i + 1, componentType: 5126, count: 3, type: "VEC3", min: [0, 0, 0], max: [0, dy, 0] });
    targets.push({ POSITION: i + 1 });
  });

  // Nodes: the bones in a chain (0..14), then the face mesh as a child of the head.
  const meshNode = BONES.length;
  const nodes: { name: string; children?: number[]; mesh?: number; translation?: number[] }[] = BONES.map((name, i) => ({
    name,
    translation: [0, i === 0 ? 1 : 0.05, 0],
    children: i + 1 < BONES.length ? [i + 1] : [],
  }));
  nodes[BONES.indexOf("head")].children = [...(nodes[BONES.indexOf("head")].children ?? []), meshNode];
  nodes.push({ name: "face", mesh: 0 });

  const gltf = {
    asset: { version: "2.0", generator: "aura ui tests" },
    extensionsUsed: ["VRMC_vrm"],
    scene: 0,
    scenes: [{ nodes: [0] }],
    nodes,
    meshes: [
      {
        name: "face",
        primitives: [{ attributes: { POSITION: 0 }, targets }],
        weights: EXPRESSIONS.map(() => 0),
        extras: { targetNames: [...EXPRESSIONS] },
      },
    ],
    buffers: [{ byteLength: bin.length }],
    bufferViews,
    accessors,
    extensions: {
      VRMC_vrm: {
        specVersion: "1.0",
        meta: {
          name: "Aura test avatar",
          version: "1",
          authors: ["Aura's UI tests"],
          licenseUrl: "https://vrm.dev/licenses/1.0/",
          avatarPermission: "everyone",
          commercialUsage: "personalNonProfit",
          creditNotation: "unnecessary",
          allowRedistribution: false,
          modification: "prohibited",
        },
        humanoid: { humanBones: Object.fromEntries(BONES.map((b, i) => [b, { node: i }])) },
        expressions: {
          preset: Object.fromEntries(
            EXPRESSIONS.map((name, index) => [name, { morphTargetBinds: [{ node: meshNode, index, weight: 1 }], isBinary: false }]),
          ),
        },
      },
    },
  };

  // GLB: header, then the JSON chunk padded with spaces and the BIN chunk with zeros.
  const pad = (b: Buffer, fill: number) => Buffer.concat([b, Buffer.alloc((4 - (b.length % 4)) % 4, fill)]);
  const json = pad(Buffer.from(JSON.stringify(gltf)), 0x20);
  const data = pad(bin, 0);
  const chunk = (body: Buffer, type: number) => {
    const head = Buffer.alloc(8);
    head.writeUInt32LE(body.length, 0);
    head.writeUInt32LE(type, 4);
    return Buffer.concat([head, body]);
  };
  const chunks = Buffer.concat([chunk(json, 0x4e4f534a), chunk(data, 0x004e4942)]);
  const header = Buffer.alloc(12);
  header.writeUInt32LE(0x46546c67, 0);
  header.writeUInt32LE(2, 4);
  header.writeUInt32LE(12 + chunks.length, 8);
  return Buffer.concat([header, chunks]);
}
