// The Assistant's chat page: useAgentChat (from @cloudflare/ai-chat) over
// useAgent (from agents/react), unchanged from what an app on the Agents
// platform would write; agentflow's Think agent serves the protocol.
// ?name=<instance> picks the Assistant instance (default "ada"); ?token=
// is passed on to the agent when the server requires one.
import { StrictMode, Suspense, useState } from "react";
import { createRoot } from "react-dom/client";
import { useAgent } from "agents/react";
import { useAgentChat } from "@cloudflare/ai-chat/react";
import "./style.css";

const params = new URLSearchParams(location.search);
const name = params.get("name") || "ada";
const token = params.get("token");

function Part({ part }) {
  if (part.type === "text") return <p className="text">{part.text}</p>;
  if (part.type === "reasoning") return <p className="reasoning">{part.text}</p>;
  if (part.type === "file") return <p className="file">📎 {part.filename ?? part.mediaType}</p>;
  if (part.type.startsWith("tool-")) {
    const tool = part.type.slice(5);
    const result = part.state === "output-available" ? JSON.stringify(part.output) : part.state === "output-error" ? part.errorText : "…";
    return (
      <div className="tool" data-tool={tool} data-state={part.state}>
        <code>
          {tool}({JSON.stringify(part.input ?? {})})
        </code>{" "}
        → <span className="result">{result}</span>
      </div>
    );
  }
  return null;
}

function Chat() {
  const agent = useAgent({
    agent: "Assistant",
    name,
    host: location.host,
    protocol: location.protocol === "https:" ? "wss" : "ws",
    query: token ? { token } : undefined,
  });
  const { messages, sendMessage, status, stop, clearHistory, error } = useAgentChat({ agent });
  const [text, setText] = useState("");
  const busy = status === "submitted" || status === "streaming";
  return (
    <main data-status={status}>
      <header>
        <h1>Assistant</h1>
        <span className="who">
          instance <b>{name}</b> · <span id="status">{status}</span>
        </span>
      </header>
      <ol id="messages">
        {messages.map((m) => (
          <li key={m.id} className={`msg ${m.role}`} data-id={m.id} data-role={m.role}>
            {m.parts.map((p, i) => (
              <Part key={i} part={p} />
            ))}
          </li>
        ))}
      </ol>
      {error && <p id="error">{error.message}</p>}
      <form
        onSubmit={(e) => {
          e.preventDefault();
          if (!text.trim()) return;
          sendMessage({ text });
          setText("");
        }}
      >
        <input id="prompt" value={text} onChange={(e) => setText(e.target.value)} placeholder="What time is it in Asia/Tokyo?" autoFocus />
        {busy ? (
          <button id="stop" type="button" onClick={() => stop()}>
            Stop
          </button>
        ) : (
          <button id="send">Send</button>
        )}
        <button id="clear" type="button" onClick={() => clearHistory()}>
          Clear
        </button>
      </form>
    </main>
  );
}

createRoot(document.getElementById("root")).render(
  <StrictMode>
    <Suspense fallback={<p>Loading…</p>}>
      <Chat />
    </Suspense>
  </StrictMode>,
);
