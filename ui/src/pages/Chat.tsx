// A chat playground over the OpenAI-compatible `/v1/chat/completions`: streaming,
// sampling parameters, tools and the calls the model makes, and each answer's signed
// receipt. Answers can be spoken by the avatar.
import { useRef, useState } from "preact/hooks";
import { request, sse } from "../lib/api";
import { avatarOpen, avatarSay } from "../lib/avatarBus";
import { useCommands } from "../lib/commands";
import { errorText, toast } from "../lib/toast";
import { useApi } from "../lib/useApi";

interface Msg {
  role: "system" | "user" | "assistant" | "tool";
  content: string;
  tool_calls?: { id: string; type: "function"; function: { name: string; arguments: string } }[];
  receipt?: string;
}

const TOOLS_EXAMPLE = `[{"type":"function","function":{"name":"get_weather","description":"The weather in a city","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]`;

export function Chat() {
  const models = useApi<{ data: { id: string; kind: string }[] }>("/v1/models");
  const chatModels = (models.data?.data ?? []).filter((m) => m.kind === "chat");
  const [model, setModel] = useState("");
  const [system, setSystem] = useState("You are a helpful assistant.");
  const [messages, setMessages] = useState<Msg[]>([]);
  const [input, setInput] = useState("");
  const [params, setParams] = useState({ temperature: 0, top_p: 1, max_tokens: 128, seed: 0, stream: true });
  const [tools, setTools] = useState("");
  const [speak, setSpeak] = useState(true);
  const [busy, setBusy] = useState(false);
  const abort = useRef<AbortController | null>(null);

  const send = async (e?: Event) => {
    e?.preventDefault();
    if (!input.trim() || busy) return;
    const history: Msg[] = [...messages, { role: "user", content: input }];
    setMessages([...history, { role: "assistant", content: "" }]);
    setInput("");
    setBusy(true);
    const ctl = new AbortController();
    abort.current = ctl;
    const body: Record<string, unknown> = {
      model: model || chatModels[0]?.id,
      messages: [{ role: "system", content: system }, ...history.map(({ role, content, tool_calls }) => ({ role, content, ...(tool_calls ? { tool_calls } : {}) }))],
      temperature: params.temperature,
      top_p: params.top_p,
      max_tokens: params.max_tokens,
      seed: params.seed,
      stream: params.stream,
    };
    if (tools.trim()) {
      try {
        body.tools = JSON.parse(tools);
      } catch {
        toast("the tools are not valid JSON", "error");
        setBusy(false);
        return;
      }
    }
    let answer: Msg = { role: "assistant", content: "" };
    const show = () => setMessages([...history, { ...answer }]);
    try {
      const resp = await request("/v1/chat/completions", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
        signal: ctl.signal,
      });
      answer.receipt = resp.headers.get("x-aura-receipt") ?? undefined;
      if (params.stream) {
        const calls: NonNullable<Msg["tool_calls"]> = [];
        for await (const ev of sse(resp, ctl.signal)) {
          if (ev.data === "[DONE]") break;
          const chunk = JSON.parse(ev.data);
          const delta = chunk.choices?.[0]?.delta ?? {};
          if (delta.content) answer.content += delta.content;
          for (const tc of delta.tool_calls ?? []) {
            const at = tc.index ?? 0;
            calls[at] ??= { id: tc.id ?? "", type: "function", function: { name: "", arguments: "" } };
            if (tc.id) calls[at].id = tc.id;
            if (tc.function?.name) calls[at].function.name += tc.function.name;
            if (tc.function?.arguments) calls[at].function.arguments += tc.function.arguments;
          }
          if (calls.length) answer.tool_calls = calls;
          show();
        }
      } else {
        const full = await resp.json();
        const m = full.choices?.[0]?.message ?? {};
        answer = { ...answer, content: m.content ?? "", tool_calls: m.tool_calls };
        show();
      }
      if (speak && avatarOpen.get()) avatarSay(answer.content);
    } catch (err) {
      if ((err as Error).name !== "AbortError") toast(errorText(err), "error");
    } finally {
      setBusy(false);
      abort.current = null;
    }
  };
  useCommands(
    [
      { id: "chat.clear", title: "Clear the chat", group: "Chat", run: () => setMessages([]) },
      { id: "chat.stop", title: "Stop the answer", group: "Chat", run: () => abort.current?.abort() },
      { id: "chat.tools", title: "Offer an example tool to the model", group: "Chat", run: () => setTools(TOOLS_EXAMPLE) },
    ],
    [],
  );
  const num = (k: keyof typeof params) => (e: Event) => setParams({ ...params, [k]: Number((e.target as HTMLInputElement).value) });
  return (
    <section class="chat">
      <h1>Chat</h1>
      <div class="chat-layout">
        <div>
          <ol class="messages" aria-label="Conversation" aria-live="polite">
            {messages.map((m) => (
              <li class={`msg ${m.role}`}>
                <span class="role">{m.role}</span>
                <div class="content" data-testid={m.role === "assistant" ? "assistant-text" : undefined}>
                  {m.content}
                </div>
                {m.tool_calls?.map((c) => (
                  <p class="tool-call" data-testid="tool-call">
                    calls <code>{c.function.name}</code> <code class="args">{c.function.arguments}</code>
                  </p>
                ))}
                {m.receipt && <p class="small">receipt <span class="mono">{m.receipt}</span></p>}
              </li>
            ))}
          </ol>
          <form onSubmit={send} class="chat-input">
            <label for="chat-input" class="sr-only">
              Message
            </label>
            <textarea
              id="chat-input"
              rows={2}
              value={input}
              placeholder="Ask something… (Enter sends, Shift-Enter for a new line)"
              onInput={(e) => setInput((e.target as HTMLTextAreaElement).value)}
              onKeyDown={(e) => {
                if (e.key === "Enter" && !e.shiftKey) send(e);
              }}
            />
            {busy ? (
              <button type="button" onClick={() => abort.current?.abort()}>
                Stop
              </button>
            ) : (
              <button type="submit" class="primary" disabled={!input.trim()}>
                Send
              </button>
            )}
          </form>
        </div>
        <form class="params" aria-label="Parameters" onSubmit={(e) => e.preventDefault()}>
          <label>
            Model
            <select value={model || chatModels[0]?.id} onChange={(e) => setModel((e.target as HTMLSelectElement).value)}>
              {chatModels.map((m) => (
                <option value={m.id}>{m.id}</option>
              ))}
            </select>
          </label>
          {models.error && <p class="error">{models.error}</p>}
          <label>
            System
            <textarea rows={3} value={system} onInput={(e) => setSystem((e.target as HTMLTextAreaElement).value)} />
          </label>
          <label>
            Temperature {params.temperature}
            <input type="range" min={0} max={2} step={0.1} value={params.temperature} onInput={num("temperature")} />
          </label>
          <label>
            Top p {params.top_p}
            <input type="range" min={0} max={1} step={0.05} value={params.top_p} onInput={num("top_p")} />
          </label>
          <label>
            Max tokens
            <input type="number" min={1} max={4096} value={params.max_tokens} onInput={num("max_tokens")} />
          </label>
          <label>
            Seed
            <input type="number" min={0} value={params.seed} onInput={num("seed")} />
          </label>
          <label class="check">
            <input type="checkbox" checked={params.stream} onChange={(e) => setParams({ ...params, stream: (e.target as HTMLInputElement).checked })} /> Stream
          </label>
          <label class="check">
            <input type="checkbox" checked={speak} onChange={(e) => setSpeak((e.target as HTMLInputElement).checked)} /> Avatar speaks answers
          </label>
          <label>
            Tools (OpenAI JSON)
            <textarea rows={4} value={tools} placeholder="[]" onInput={(e) => setTools((e.target as HTMLTextAreaElement).value)} />
          </label>
          <button type="button" class="ghost" onClick={() => setTools(TOOLS_EXAMPLE)}>
            Example tool
          </button>
        </form>
      </div>
    </section>
  );
}
