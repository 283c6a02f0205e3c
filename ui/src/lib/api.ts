// The node's API, same origin: JSON calls with the API key as `Authorization: Bearer`,
// and the event stream over a WebSocket, which carries the key as a subprotocol because
// browsers cannot set headers on a WebSocket (the node answers `aura.v1`). The key lives
// in this tab's sessionStorage only, never in a cookie or in localStorage.

import { signal } from "./signal";

const KEY = "aura.apiKey";

export const apiKey = signal<string | null>(sessionStorage.getItem(KEY));
/** Set when the node answered 401: the page asks for a key. */
export const needKey = signal(false);

export function setApiKey(key: string | null): void {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
  apiKey.set(key);
  needKey.set(false);
}

export class ApiError extends Error {
  constructor(
    public status: number,
    message: string,
    public code?: string,
  ) {
    super(message);
  }
}

function headers(extra?: HeadersInit): Headers {
  const h = new Headers(extra);
  const key = apiKey.get();
  if (key) h.set("authorization", `Bearer ${key}`);
  return h;
}

/** A raw fetch with the key; the caller reads the body (streams, images). */
export async function request(path: string, init: RequestInit = {}): Promise<Response> {
  const resp = await fetch(path, { ...init, headers: headers(init.headers), credentials: "omit" });
  if (resp.status === 401) needKey.set(true);
  if (!resp.ok) {
    let message = `${resp.status} ${resp.statusText}`;
    let code: string | undefined;
    try {
      const body = await resp.json();
      message = body?.error?.message ?? message;
      code = body?.error?.code;
    } catch {
      // Not the node's JSON error shape; keep the status line.
    }
    throw new ApiError(resp.status, message, code);
  }
  return resp;
}

export async function get<T>(path: string): Promise<T> {
  return (await request(path)).json() as Promise<T>;
}

export async function post<T>(path: string, body?: unknown): Promise<T> {
  const resp = await request(path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body ?? {}),
  });
  return resp.status === 204 ? (undefined as T) : (resp.json() as Promise<T>);
}

export async function del<T>(path: string): Promise<T> {
  return (await request(path, { method: "DELETE" })).json() as Promise<T>;
}

/** Opens the event stream; the key, if any, rides as the `aura.key.<key>` subprotocol. */
export function openEvents(query: string): WebSocket {
  const url = new URL(`/v1/events${query}`, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const key = apiKey.get();
  const protocols = key ? ["aura.v1", `aura.key.${key}`] : ["aura.v1"];
  return new WebSocket(url, protocols);
}

/** Reads a server-sent-events body: yields each event's name and data. */
export async function* sse(resp: Response, signal?: AbortSignal): AsyncGenerator<{ event: string; data: string }> {
  const reader = resp.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  try {
    for (;;) {
      if (signal?.aborted) return;
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let cut: number;
      while ((cut = buf.search(/\r?\n\r?\n/)) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut).replace(/^\r?\n\r?\n/, "");
        let event = "message";
        const data: string[] = [];
        for (const line of block.split(/\r?\n/)) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length) yield { event, data: data.join("\n") };
      }
    }
  } finally {
    reader.releaseLock();
  }
}
