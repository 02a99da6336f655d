// Captures the JSON of the pinned chat client (package.json pins `ai`,
// `@ai-sdk/react`, `agents` and `@cloudflare/ai-chat`) for think's
// converter tests:
//
//	node capture.mjs > ../testdata/chat/client.json
//
// It drives the AI SDK's own Chat (the class useChat and useAgentChat are
// built on) with a transport that records what the client sends and plays
// back UI message stream chunks of the shape think's chat stream produces.
// The output holds, per turn, the messages the client sent, the chunks it
// was given, and the messages the client assembled from them. Every chunk
// is checked with the `ai` package's uiMessageChunkSchema and every
// message with validateUIMessages, so a fixture the pinned client would
// reject is never written. The ids are fixed, so the output is the same on
// every run.
import { Chat } from "@ai-sdk/react";
import { uiMessageChunkSchema, validateUIMessages } from "ai";
import { readFileSync } from "node:fs";

// Two turns, as think streams them (think/chatstream.go): the assistant
// message's id is "a_" + the submission id; the text and reasoning parts of
// step n are "t<n>" and "r<n>".
const turns = [
  {
    send: {
      text: "What time is it in Asia/Tokyo?",
      files: [{ type: "file", mediaType: "text/plain", filename: "note.txt", url: "data:text/plain;base64,aGVsbG8=" }],
    },
    chunks: [
      { type: "start", messageId: "a_sub1" },
      { type: "start-step" },
      { type: "tool-input-start", toolCallId: "call_1", toolName: "get_time" },
      { type: "tool-input-delta", toolCallId: "call_1", inputTextDelta: '{"zone":"Asia/Tokyo"}' },
      { type: "tool-input-available", toolCallId: "call_1", toolName: "get_time", input: { zone: "Asia/Tokyo" } },
      { type: "tool-output-available", toolCallId: "call_1", output: { zone: "Asia/Tokyo", time: "2026-01-02T12:00:00+09:00", weekday: "Friday" } },
      { type: "finish-step" },
      { type: "start-step" },
      { type: "text-start", id: "t1" },
      { type: "text-delta", id: "t1", delta: "It is noon " },
      { type: "text-delta", id: "t1", delta: "in Tokyo." },
      { type: "text-end", id: "t1" },
      { type: "finish-step" },
      { type: "finish", finishReason: "stop" },
    ],
  },
  {
    send: { text: "Add 1 and 2, and think first." },
    chunks: [
      { type: "start", messageId: "a_sub2" },
      { type: "start-step" },
      { type: "reasoning-start", id: "r0" },
      { type: "reasoning-delta", id: "r0", delta: "The user wants a sum." },
      { type: "reasoning-end", id: "r0" },
      { type: "text-start", id: "t0" },
      { type: "text-delta", id: "t0", delta: "Adding." },
      { type: "text-end", id: "t0" },
      { type: "tool-input-start", toolCallId: "call_2", toolName: "add" },
      { type: "tool-input-delta", toolCallId: "call_2", inputTextDelta: '{"numbers":[]}' },
      { type: "tool-input-available", toolCallId: "call_2", toolName: "add", input: { numbers: [] } },
      { type: "tool-output-error", toolCallId: "call_2", errorText: "add: give at least one number" },
      { type: "finish-step" },
      { type: "start-step" },
      { type: "text-start", id: "t1" },
      { type: "text-delta", id: "t1", delta: "The add tool failed." },
      { type: "text-end", id: "t1" },
      { type: "finish-step" },
      { type: "finish", finishReason: "stop" },
    ],
  },
];

let nextId = 0;
const sent = [];
let current;
const transport = {
  async sendMessages({ messages, trigger }) {
    sent.push({ trigger, messages: structuredClone(messages) });
    return new ReadableStream({
      start(controller) {
        for (const c of current.chunks) controller.enqueue(structuredClone(c));
        controller.close();
      },
    });
  },
  async reconnectToStream() {
    return null;
  },
};

const chat = new Chat({ id: "capture", transport, generateId: () => `u${++nextId}` });
const out = { versions: {}, turns: [] };
for (const pkg of ["ai", "@ai-sdk/react", "agents", "@cloudflare/ai-chat"]) {
  out.versions[pkg] = JSON.parse(readFileSync(new URL(`node_modules/${pkg}/package.json`, import.meta.url))).version;
}
for (const t of turns) {
  for (const c of t.chunks) {
    const r = await uiMessageChunkSchema().validate(c);
    if (!r.success) throw new Error(`chunk ${JSON.stringify(c)} is not a UI message chunk: ${r.error}`);
  }
  current = t;
  await chat.sendMessage(t.send);
  while (chat.status !== "ready") {
    if (chat.status === "error") throw chat.error;
    await new Promise((r) => setTimeout(r, 5));
  }
  const messages = structuredClone(chat.messages);
  await validateUIMessages({ messages });
  out.turns.push({ sent: sent.at(-1), chunks: t.chunks, messages });
}
console.log(JSON.stringify(out, null, 2));
