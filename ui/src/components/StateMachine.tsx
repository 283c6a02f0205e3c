// The mission state machine of DESIGN.md, drawn: eight states, the allowed transitions,
// the current state lit and the path the mission took traced.
const POS: Record<string, [number, number]> = {
  submitted: [70, 60],
  authorized: [230, 60],
  running: [390, 60],
  completed: [550, 60],
  escalated: [310, 170],
  compensating: [470, 170],
  failed: [630, 170],
  cancelled: [150, 170],
};
const EDGES: [string, string][] = [
  ["submitted", "authorized"],
  ["submitted", "escalated"],
  ["submitted", "failed"],
  ["submitted", "cancelled"],
  ["authorized", "running"],
  ["authorized", "cancelled"],
  ["running", "escalated"],
  ["running", "completed"],
  ["running", "compensating"],
  ["running", "failed"],
  ["running", "cancelled"],
  ["escalated", "authorized"],
  ["escalated", "running"],
  ["escalated", "compensating"],
  ["escalated", "failed"],
  ["escalated", "cancelled"],
  ["compensating", "failed"],
  ["compensating", "cancelled"],
];

export function StateMachine({ state, path }: { state: string; path: [string, string][] }) {
  const taken = new Set(path.map(([a, b]) => `${a}>${b}`));
  const visited = new Set(path.flat());
  visited.add(state);
  return (
    <svg
      class="machine"
      viewBox="0 0 700 220"
      role="img"
      aria-label={`Mission state machine; the mission is ${state}; it went ${["submitted", ...path.map((p) => p[1])].join(", ")}`}
    >
      <defs>
        <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" orient="auto-start-reverse">
          <path d="M0,0 L10,5 L0,10 z" class="arrowhead" />
        </marker>
      </defs>
      {EDGES.map(([a, b]) => {
        const [x1, y1] = POS[a];
        const [x2, y2] = POS[b];
        const dx = x2 - x1;
        const dy = y2 - y1;
        const len = Math.hypot(dx, dy) || 1;
        const pad = 38;
        return (
          <line
            class={taken.has(`${a}>${b}`) ? "edge taken" : "edge"}
            x1={x1 + (dx / len) * pad}
            y1={y1 + (dy / len) * 18}
            x2={x2 - (dx / len) * pad}
            y2={y2 - (dy / len) * 18}
            marker-end="url(#arrow)"
          />
        );
      })}
      {Object.entries(POS).map(([name, [x, y]]) => (
        <g class={`node${name === state ? " current" : ""}${visited.has(name) ? " visited" : ""} state-${name}`} data-state={name}>
          <rect x={x - 58} y={y - 17} width="116" height="34" rx="17" />
          <text x={x} y={y + 5} text-anchor="middle">
            {name}
          </text>
        </g>
      ))}
    </svg>
  );
}
