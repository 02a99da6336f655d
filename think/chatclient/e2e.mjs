// End-to-end test of think's chat protocol with the real client: the
// useAgentChat hook of @cloudflare/ai-chat with useAgent from agents/react
// (versions pinned in package.json), rendered by React in Node
// (react-test-renderer, no DOM), against a Go server.
//
//	node e2e.mjs http://127.0.0.1:PORT NAME
//
// The server must serve the Talker class of think/chat_client_test.go,
// which runs this script: a scripted model that answers "wait" by calling
// a tool that waits until the turn is cancelled, "color" by calling the
// client tool pick_color, "delete" by calling delete_file (which needs
// approval), and anything else by calling get_weather and then saying "It
// is sunny in Oslo.". Every chunk
// the server streams is checked with the `ai` package's own
// uiMessageChunkSchema, every message list with validateUIMessages. On
// success the script prints "PASS" and exits 0; on the first failed check
// it prints "FAIL: <what>" and exits 1.

import { createElement as h, Suspense } from "react";
import TestRenderer from "react-test-renderer";
import { useAgent } from "agents/react";
import { useAgentChat } from "@cloudflare/ai-chat/react";
import { uiMessageChunkSchema, validateUIMessages } from "ai";
import WebSocket from "ws";

// Generous: a passing run takes a few seconds, but under a machine loaded
// by -race test binaries a step once took more than 8 s. The Go test gives
// the script 90 s.
const TOTAL_TIMEOUT_MS = 80_000;
const STEP_TIMEOUT_MS = 20_000;

const [base, name = "chat-e2e"] = process.argv.slice(2);
if (!base) {
  console.error("usage: node e2e.mjs http://HOST:PORT [NAME]");
  process.exit(2);
}
const host = new URL(base).host;
globalThis.IS_REACT_ACT_ENVIRONMENT = false;
globalThis.WebSocket ??= WebSocket; // Node 20 has none

let step = "start";
let checks = 0;
const clients = [];
const problems = []; // from the tap, reported at the next check

function fail(msg) {
  console.error(`FAIL: ${step}: ${msg}`);
  for (const c of clients) {
    console.error(`  client ${c.label}: status ${c.chat?.status}, error ${c.chat?.error?.message}, messages ${show(c.chat?.messages?.map(brief))}`);
  }
  process.exit(1);
}
const overall = setTimeout(() => fail(`the script did not finish within ${TOTAL_TIMEOUT_MS / 1000} s`), TOTAL_TIMEOUT_MS);
process.on("unhandledRejection", (e) => fail(`unhandled rejection: ${e?.stack ?? e}`));
process.on("uncaughtException", (e) => fail(`uncaught exception: ${e?.stack ?? e}`));
// React and the hook report problems with console.error; any is a failure,
// except react-test-renderer's notice that it is deprecated.
const consoleError = console.error;
console.error = (...args) => {
  if (String(args[0]).includes("react-test-renderer is deprecated")) return;
  consoleError(...args);
  problems.push(`console.error: ${args.map(String).join(" ")}`);
};

const show = (v) => JSON.stringify(v);
// same compares JSON values, whatever the order of their keys.
const canon = (v) =>
  Array.isArray(v) ? v.map(canon) : v && typeof v === "object" ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, canon(v[k])])) : v;
const same = (x, y) => show(canon(x)) === show(canon(y));
// brief is a message as "role:id:parts", for failure output.
const brief = (m) => `${m.role}:${m.id}:${m.parts.map((p) => p.type + (p.state ? `(${p.state})` : "")).join(",")}`;

function check(cond, msg) {
  if (problems.length) fail(problems.join("; "));
  if (!cond) fail(msg);
  checks++;
}

async function waitFor(cond, what, ms = STEP_TIMEOUT_MS) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (problems.length) fail(problems.join("; "));
    if (Date.now() > deadline) fail(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  checks++;
}

// TapWebSocket is the socket the clients use: it checks every chat chunk
// the server sends against the `ai` package's schema, and counts frames.
// turns: per request id, the type of each chunk by its seq, live or replayed
const frames = { responses: 0, replayed: 0, turns: new Map(), connects: 0 };
class TapWebSocket extends WebSocket {
  constructor(...args) {
    super(...args);
    this.addEventListener("message", (e) => {
      let f;
      try {
        f = JSON.parse(String(e.data));
      } catch {
        return;
      }
      if (f.type === "cf_agent_chat_messages" && f.connect) frames.connects++;
      if (f.type === "cf_agent_error") problems.push(`the server refused a frame: ${f.error}`);
      if (f.type !== "cf_agent_use_chat_response") return;
      frames.responses++;
      if (f.replay) frames.replayed++;
      if (!f.body || f.error) return;
      if (!frames.turns.has(f.id)) frames.turns.set(f.id, []);
      const types = frames.turns.get(f.id);
      const type = JSON.parse(f.body).type;
      if (types[f.seq] !== undefined && types[f.seq] !== type) problems.push(`request ${f.id}: chunk ${f.seq} was ${types[f.seq]}, now ${type}`);
      types[f.seq] = type;
      uiMessageChunkSchema()
        .validate(JSON.parse(f.body))
        .then((r) => r.success || problems.push(`chunk ${f.body} is not a UI message chunk: ${r.error}`));
    });
  }
}

// mount renders a component using useAgent and useAgentChat, as an app
// does, and returns a handle whose chat is the hook's latest result.
function mount(label, options = {}) {
  const c = { label, chat: null, statuses: new Set(), connects: frames.connects };
  function Chat() {
    const agent = useAgent({ agent: "Talker", name, host, protocol: "ws", WebSocket: TapWebSocket });
    const chat = useAgentChat({ agent, ...options });
    c.chat = chat;
    c.agent = agent;
    c.statuses.add(chat.status);
    return null;
  }
  c.renderer = TestRenderer.create(h(Suspense, { fallback: null }, h(Chat)));
  c.unmount = () => {
    c.renderer.unmount();
    clients.splice(clients.indexOf(c), 1);
  };
  clients.push(c);
  return c;
}

const last = (c) => c.chat.messages.at(-1);
// settled: the client has rendered, its socket is open and it is idle, as
// when a person starts typing.
// (The conversation a server sends on connect replaces the client's, but
// for sends it buffered while offline: a message sent in the moment
// between the socket opening and that snapshot would vanish until the
// turn's end.) Clients are mounted one at a time, so the snapshot after
// mounting is this client's.
const settled = (c) => c.chat?.status === "ready" && c.agent?.readyState === 1 && frames.connects > c.connects;
const textOf = (m) => m.parts.filter((p) => p.type === "text").map((p) => p.text).join("");
const toolPart = (m, tool) => m?.parts.find((p) => p.type === `tool-${tool}`);
const ids = (c) => c.chat.messages.map((m) => m.id).join(",");
const answered = (c) => {
  const m = last(c);
  return c.chat.status === "ready" && m?.role === "assistant" && textOf(m).includes("It is sunny in Oslo.");
};

async function valid(c) {
  try {
    await validateUIMessages({ messages: c.chat.messages });
    checks++;
  } catch (e) {
    fail(`client ${c.label}'s messages are not valid UI messages: ${e.message}`);
  }
}

// 1. A message is answered with a streamed text and a tool call.
step = "send and stream";
const a = mount("a");
await waitFor(() => settled(a), "client a to connect");
check(a.chat.messages.length === 0, `a new conversation has messages: ${show(a.chat.messages)}`);
await a.chat.sendMessage({ text: "Weather in Oslo?" });
await waitFor(() => answered(a), "the answer");
const streamed = [...frames.turns.values()][0].join(" ");
check(streamed.startsWith("start start-step text-start text-delta text-end tool-input-start tool-input-delta tool-input-available tool-output-available finish-step") &&
  streamed.endsWith("finish"), `the answer was not streamed chunk by chunk: ${streamed}`);
const answer = last(a);
const tool = toolPart(answer, "get_weather");
check(tool?.state === "output-available" && tool.input?.city === "Oslo" && tool.output?.sky === "sunny",
  `the tool call: ${show(tool)}`);
await waitFor(() => a.chat.messages.length === 2 && a.chat.messages[0].role === "user", "the conversation of the first turn");
await valid(a);

// 2. A second client sees the conversation, and both see each other's
// turns live.
step = "two clients";
const b = mount("b");
await waitFor(() => settled(b) && ids(b) === ids(a), "client b to show the conversation");
check(same(b.chat.messages, a.chat.messages), `b shows ${show(b.chat.messages)}, a ${show(a.chat.messages)}`);
await b.chat.sendMessage({ text: "And tomorrow?" });
await waitFor(() => answered(b) && answered(a) && a.chat.messages.length === 4 && same(a.chat.messages, b.chat.messages),
  "both clients to show b's turn, the same");
await valid(b);

// 3. A client that reconnects sees the history.
step = "reconnect";
const before = a.chat.messages;
a.unmount();
const a2 = mount("a2");
await waitFor(() => settled(a2) && a2.chat.messages.length === 4, "the history after reconnecting");
check(same(a2.chat.messages, before), `after reconnecting: ${show(a2.chat.messages)}, before ${show(before)}`);

// 4. A client that connects during a turn resumes its stream, and its
// stop cancels the turn for every client.
step = "resume and cancel";
const replayedBefore = frames.replayed;
a2.chat.sendMessage({ text: "Please wait." });
await waitFor(() => toolPart(last(a2), "wait"), "the wait tool call on a2");
const c = mount("c");
await waitFor(() => c.chat && toolPart(last(c), "wait") && textOf(last(c)) === "Waiting.", "client c to resume the running turn");
check(frames.replayed > replayedBefore, "client c got no replayed chunks");
check(c.chat.messages.filter((m) => m.role === "assistant").length === 3,
  `client c shows the streaming answer twice, or not: ${show(c.chat.messages.map(brief))}`);
await c.chat.stop();
// What the clients were shown of the cut-off step is kept: the text and
// the tool call, which failed because it was cancelled.
const cut = (x) => x.chat.status === "ready" && toolPart(last(x), "wait")?.state === "output-error";
await waitFor(() => cut(a2) && cut(c) && cut(b), "the cancelled turn to end on every client");
await waitFor(() => same(a2.chat.messages, c.chat.messages) && same(a2.chat.messages, b.chat.messages), "the three clients to agree");
check(textOf(last(c)) === "Waiting." && a2.chat.messages.length === 6, `after the cancel: ${show(c.chat.messages.map(brief))}`);
await valid(c);

// 5. A client tool: the client declares pick_color (useAgentChat sends
// the tools that have an execute function as clientTools); the model's
// call waits for the client, whose onToolCall answers it with
// addToolOutput; the server stores the result and continues the turn,
// which every client sees.
step = "client tool";
const picked = [];
const d = mount("d", {
  tools: {
    pick_color: {
      description: "Asks the user for a color",
      parameters: { type: "object", properties: { hint: { type: "string" } } },
      execute: async () => ({ color: "blue" }),
    },
  },
  onToolCall: async ({ toolCall, addToolOutput }) => {
    picked.push(toolCall);
    addToolOutput({ toolCallId: toolCall.toolCallId, toolName: toolCall.toolName, output: { color: "blue" } });
  },
});
await waitFor(() => settled(d) && d.chat.messages.length === 6, "client d to connect");
await d.chat.sendMessage({ text: "Pick a color." });
// The continued answer is an assistant message of its own.
const before2 = (x) => x.chat.messages.at(-2);
const colored = (x) => x.chat.status === "ready" && textOf(last(x)).includes("You picked") && toolPart(before2(x), "pick_color")?.state === "output-available";
await waitFor(() => colored(d) && colored(b), "the client tool's result and the continued answer on d and b");
check(picked.length === 1 && picked[0].toolName === "pick_color" && picked[0].input?.hint === "sky", `onToolCall got ${show(picked)}`);
check(same(toolPart(before2(d), "pick_color").output, { color: "blue" }) && textOf(last(d)).includes('{"color":"blue"}'), `after the result: ${show(d.chat.messages.slice(-2))}`);
await waitFor(() => same(d.chat.messages, b.chat.messages) && d.chat.messages.length === 9, "d and b to agree");
await valid(d);

// 6. Approval: delete_file needs it; the call waits as approval-requested
// until the client answers with addToolApprovalResponse; approved, the
// server runs the tool and continues the turn.
step = "approval";
await d.chat.sendMessage({ text: "Please delete a.txt." });
const asked = (x) => toolPart(last(x), "delete_file")?.state === "approval-requested";
await waitFor(() => d.chat.status === "ready" && asked(d) && asked(b), "the approval request on d and b");
const approval = toolPart(last(d), "delete_file").approval;
check(typeof approval?.id === "string", `the approval request: ${show(toolPart(last(d), "delete_file"))}`);
d.chat.addToolApprovalResponse({ id: approval.id, approved: true });
const done = (x) => x.chat.status === "ready" && toolPart(before2(x), "delete_file")?.state === "output-available" && textOf(last(x)).includes("deleted a.txt");
await waitFor(() => done(d) && done(b), "the approved tool's output and the continued answer on d and b");
check(toolPart(before2(d), "delete_file").approval?.approved === true, `after the approval: ${show(toolPart(before2(d), "delete_file"))}`);
await waitFor(() => same(d.chat.messages, b.chat.messages) && d.chat.messages.length === 12, "d and b to agree after the approval");
await valid(d);

// 7. Denial: the call is not run; the denial is its outcome
// (output-denied), and the model, told so, answers.
step = "denial";
await d.chat.sendMessage({ text: "Please delete b.txt." });
await waitFor(() => d.chat.status === "ready" && asked(d) && asked(b), "the second approval request on d and b");
d.chat.addToolApprovalResponse({ id: toolPart(last(d), "delete_file").approval.id, approved: false });
const denied = (x) => x.chat.status === "ready" && toolPart(before2(x), "delete_file")?.state === "output-denied" && textOf(last(x)).includes("denied");
await waitFor(() => denied(d) && denied(b), "the denial and the continued answer on d and b");
check(toolPart(before2(d), "delete_file").approval?.approved === false, `after the denial: ${show(toolPart(before2(d), "delete_file"))}`);
await waitFor(() => same(d.chat.messages, b.chat.messages) && d.chat.messages.length === 15, "d and b to agree after the denial");
await valid(d);

step = "end";
for (const x of [...clients]) x.unmount();
clearTimeout(overall);
console.log(`PASS (${checks} checks, ${frames.responses} response frames, ${frames.replayed} replayed)`);
process.exit(0);
