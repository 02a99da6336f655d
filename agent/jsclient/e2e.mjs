// End-to-end test of agentflow's agents protocol with the public JavaScript
// client (AgentClient from the npm package `agents`, pinned in package.json).
//
//	node e2e.mjs http://127.0.0.1:PORT [NAME [http://127.0.0.1:PORT2]]
//
// The server must serve the Counter example (examples/counter) and the
// ReadonlyCounter class of agent/jsclient_test.go, which runs this script.
// NAME (default "js-e2e") is the Counter instance used; the readonly
// checks use NAME + "-ro". With a second URL, a node of the same cluster,
// client B connects through it: A and B are then clients of one agent
// through two nodes, and B also calls and streams through its node. On
// success the script prints "PASS" and exits 0; on the first failed check
// it prints "FAIL: <what>" and exits 1.

import { AgentClient } from "agents/client";
import WebSocket from "ws"; // Node 20 has no global WebSocket; partysocket takes this one

const TOTAL_TIMEOUT_MS = 20_000;
const STEP_TIMEOUT_MS = 5_000;

const [base, name = "js-e2e", base2] = process.argv.slice(2);
if (!base) {
  console.error("usage: node e2e.mjs http://HOST:PORT [NAME [http://HOST2:PORT2]]");
  process.exit(2);
}
const host = new URL(base).host;
const hostB = base2 ? new URL(base2).host : host; // where client B connects

let step = "start";
const clients = [];
let checks = 0;

function fail(msg) {
  console.error(`FAIL: ${step}: ${msg}`);
  for (const { label, client, ev } of clients) {
    for (const e of ev.connErrors) console.error(`  client ${label}: ${e}`);
    try {
      client.close();
    } catch {}
  }
  process.exit(1);
}

const overall = setTimeout(() => fail(`the script did not finish within ${TOTAL_TIMEOUT_MS / 1000} s`), TOTAL_TIMEOUT_MS);
process.on("unhandledRejection", (e) => fail(`unhandled rejection: ${e?.stack ?? e}`));
process.on("uncaughtException", (e) => fail(`uncaught exception: ${e?.stack ?? e}`));

const show = (v) => JSON.stringify(v);

function check(cond, msg) {
  if (!cond) fail(msg);
  checks++;
}

function equal(got, want, what) {
  check(show(got) === show(want), `${what}: got ${show(got)}, want ${show(want)}`);
}

async function waitFor(cond, what, ms = STEP_TIMEOUT_MS) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) fail(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  checks++;
}

// within awaits promise, failing the script if it takes longer than ms.
async function within(promise, what, ms = STEP_TIMEOUT_MS) {
  const timer = setTimeout(() => fail(`timed out after ${ms} ms waiting for ${what}`), ms);
  try {
    return await promise;
  } finally {
    clearTimeout(timer);
  }
}

// call calls a method that must succeed and returns its result.
async function call(c, method, args) {
  try {
    return await within(c.client.call(method, args), `the reply to ${method}`);
  } catch (e) {
    fail(`${method}(${args.map(show).join(", ")}) failed: ${e.message}`);
  }
}

// callFails calls a method that must fail and returns the error's message.
async function callFails(c, method, args) {
  let res;
  try {
    res = await within(c.client.call(method, args), `the reply to ${method}`);
  } catch (e) {
    return e.message;
  }
  fail(`${method}(${args.map(show).join(", ")}) succeeded with ${show(res)}, want an error`);
}

// connect opens an AgentClient and records what it receives. It does not
// reconnect (maxRetries 0), so a dropped connection is a connection error
// the final checks see.
function connect(label, agent, room, extra = {}) {
  const ev = { states: [], stateErrors: [], identities: [], connErrors: [], closed: false };
  const client = new AgentClient({
    agent,
    name: room,
    host,
    WebSocket,
    maxRetries: 0,
    defaultCallTimeout: STEP_TIMEOUT_MS,
    onStateUpdate: (state, source) => ev.states.push({ state, source }),
    onStateUpdateError: (error) => ev.stateErrors.push(error),
    onIdentity: (n, a) => ev.identities.push({ name: n, agent: a }),
    onConnectionError: (e) => ev.connErrors.push(e.message),
    ...extra,
  });
  client.addEventListener("close", () => {
    ev.closed = true;
  });
  const c = { label, client, ev };
  clients.push(c);
  return c;
}

const fromServer = (c) => c.ev.states.filter((s) => s.source === "server").map((s) => s.state);

async function ready(c, agent, room, wantState) {
  await within(c.client.ready, `client ${c.label} to be ready (identity and state)`);
  check(c.client.identified, `client ${c.label} is not identified after ready`);
  equal(c.ev.identities, [{ name: room, agent }], `client ${c.label}: identity`);
  equal(c.client.state, wantState, `client ${c.label}: state on connect`);
  equal(fromServer(c), [wantState], `client ${c.label}: state frames on connect`);
}

// 1. Connect; the identity and the state arrive, in that order.
step = "connect A";
const A = connect("A", "Counter", name); // the client derives the URL name "counter"
await ready(A, "counter", name, { count: 0 });
console.log(`ok - A connected to /agents/counter/${name}: identity and state {"count":0}`);

// 2. A call; its state change reaches the caller too, as on the original server.
step = "increment(2)";
equal(await call(A, "increment", [2]), 2, "increment(2) result");
await waitFor(() => show(A.client.state) === show({ count: 2 }), `A to receive the state {"count":2} its call set`);
equal(fromServer(A).at(-1), { count: 2 }, "A: last state from the server");
console.log("ok - increment(2) = 2, and A received the new state");

// 3. A streaming call.
step = "countdown(3)";
{
  const chunks = [];
  let done;
  let streamError;
  const res = await within(
    A.client.call("countdown", [3], {
      stream: {
        onChunk: (c) => chunks.push(c),
        onDone: (r) => {
          done = r;
        },
        onError: (e) => {
          streamError = e;
        },
      },
    }),
    "the end of the countdown stream",
  ).catch((e) => fail(`countdown(3) failed: ${e.message}`));
  check(streamError === undefined, `stream onError called: ${streamError}`);
  equal(chunks, [3, 2, 1], "countdown chunks");
  equal(done, "liftoff", "countdown onDone result");
  equal(res, "liftoff", "countdown call result");
}
console.log('ok - countdown(3) streamed 3, 2, 1 and ended with "liftoff"');

// 4. A second client; a state push from A reaches B and is not echoed to A.
step = "connect B";
const B = connect("B", "Counter", name, { host: hostB });
await ready(B, "counter", name, { count: 2 });
console.log(`ok - B connected through ${hostB} and received {"count":2}`);

step = "A pushes state";
{
  const aServerStates = fromServer(A).length;
  A.client.setState({ count: 10 });
  await waitFor(() => show(fromServer(B).at(-1)) === show({ count: 10 }), `B to receive {"count":10}`);
  // A round trip on A: an echo of its push would arrive before this reply.
  await callFails(A, "noSuchMethod", []);
  equal(fromServer(A).slice(aServerStates), [], "states the server sent A after its own push");
  equal(A.client.state, { count: 10 }, "A's state after its push");
}
console.log('ok - A pushed {"count":10}; B received it, A got no echo');

if (base2) {
  // B's calls go through its node to the one the agent is live on; their
  // state changes reach A on the other node.
  step = "B calls through its node";
  equal(await call(B, "increment", [0]), 10, "increment(0) through B's node");
  await waitFor(() => fromServer(A).length > 0 && show(fromServer(A).at(-1)) === show({ count: 10 }), `A to receive the state B's call set`);
  const chunks = [];
  const res = await within(
    B.client.call("countdown", [2], { stream: { onChunk: (c) => chunks.push(c) } }),
    "the end of the countdown stream through B's node",
  ).catch((e) => fail(`countdown(2) through B's node failed: ${e.message}`));
  equal(chunks, [2, 1], "countdown chunks through B's node");
  equal(res, "liftoff", "countdown result through B's node");
  console.log("ok - B called and streamed through its node; A saw the state it set");
}

// 5. Methods clients may not call, or that do not exist.
step = "reset (not callable)";
{
  const msg = await callFails(A, "reset", []);
  check(msg.includes("Method reset is not callable"), `error ${show(msg)} does not say "Method reset is not callable"`);
}
step = "unknown method";
{
  const msg = await callFails(A, "fly", []);
  check(/Method fly does not exist/.test(msg), `error ${show(msg)} does not say "Method fly does not exist"`);
}
console.log("ok - reset is not callable; fly does not exist");

// 6. An invalid state push is refused and reaches nobody.
step = "invalid state";
{
  const bStates = fromServer(B).length;
  A.client.setState({ count: -1 });
  await waitFor(() => A.ev.stateErrors.length === 1, "onStateUpdateError on A");
  check(/state update rejected/i.test(A.ev.stateErrors[0]), `state error ${show(A.ev.stateErrors[0])} does not say "State update rejected"`);
  // The server kept 10: the next increment makes 11, which B receives next.
  equal(await call(A, "increment", [1]), 11, "increment(1) after the refused push");
  await waitFor(() => fromServer(B).length > bStates, "B to receive the state after increment(1)");
  equal(fromServer(B).slice(bStates), [{ count: 11 }], "states B received after the refused push");
  equal(B.ev.stateErrors, [], "B's state errors");
}
console.log("ok - the push of count -1 was refused (onStateUpdateError) and B never saw it");

// 7. A readonly connection (ReadonlyCounter marks it so in OnConnect).
step = "readonly";
{
  const room = `${name}-ro`;
  const R = connect("R", "ReadonlyCounter", room, { query: { readonly: "true" } });
  const W = connect("W", "ReadonlyCounter", room);
  await ready(R, "readonly-counter", room, { count: 0 });
  await ready(W, "readonly-counter", room, { count: 0 });

  R.client.setState({ count: 5 });
  await waitFor(() => R.ev.stateErrors.length === 1, "onStateUpdateError on the readonly client");
  equal(R.ev.stateErrors[0], "Connection is readonly", "readonly state push error");

  const msg = await callFails(R, "increment", [1]);
  check(/readonly/i.test(msg), `increment over a readonly connection: error ${show(msg)} does not mention readonly`);

  // The writable client still writes, and the readonly one still listens.
  W.client.setState({ count: 7 });
  await waitFor(() => show(fromServer(R).at(-1)) === show({ count: 7 }), `R to receive {"count":7}`);
  equal(fromServer(W).slice(1), [], "states the server sent W (the refused pushes must not reach it)");
}
console.log('ok - readonly: push refused with "Connection is readonly", calls that set state fail, broadcasts still arrive');

// 8. No connection dropped along the way; close everything.
step = "close";
for (const c of clients) {
  equal(c.ev.connErrors, [], `client ${c.label}: connection errors`);
  check(!c.ev.closed, `client ${c.label} was disconnected before the end`);
  c.client.close();
}
await waitFor(() => clients.every((c) => c.ev.closed), "every client to close");
clearTimeout(overall);
console.log(`PASS: ${checks} checks`);
process.exit(0);
