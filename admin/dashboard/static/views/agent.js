// One agent: its state (live), schedules, fibers, workflows and, for a
// Think agent, its submissions and conversation.

import {api} from '../api.js';
import {badge, h, json, section, table, timeEl, update, workflowHref} from '../dom.js';

// text is a conversation message's readable text (a model.Message:
// role, content, toolCalls, toolName), whatever else it holds.
function text(m) {
  if (typeof m === 'string') return m;
  const lines = [];
  if (m?.toolName) lines.push(`${m.isError ? 'error from' : 'result of'} ${m.toolName}:`);
  if (typeof m?.content === 'string' && m.content) lines.push(m.content);
  for (const c of m?.toolCalls ?? []) lines.push(`→ ${c.name}(${JSON.stringify(c.arguments ?? {})})`);
  return lines.length ? lines.join('\n') : JSON.stringify(m);
}

export function agentView(root, [cls, name], _query, app) {
  const path = `agents/${encodeURIComponent(cls)}/${encodeURIComponent(name)}`;
  const facts = h('p', {class: 'muted', id: 'agent-facts'});
  const state = h('div', {id: 'agent-state'});
  const rest = h('div');
  root.append(
    h('div', {class: 'title'},
      h('a', {href: `#/agents?class=${encodeURIComponent(cls)}`, class: 'back'}, `← ${cls} agents`),
      h('h1', null, h('span', null, cls), ' / ', h('span', {class: 'mono'}, name)),
      facts),
    section('State', state),
    rest);

  return {
    async refresh() {
      const d = await api(path);
      const a = d.agent;
      update(facts, [a.owner, a.updated_at], () => [
        a.owner ? `live on ${a.owner}` : 'live nowhere', ' · last activity ', timeEl(a.updated_at), ' · created ', timeEl(a.created_at),
      ]);
      update(state, a.state ?? null, (s) => json(s ?? undefined, {id: 'agent-state-json'}));
      const {schedules, fibers, workflows, submissions, conversation} = d;
      update(rest, {schedules, fibers, workflows, submissions, conversation}, () => [
        section('Schedules', table(schedules, [
          ['Method', (s) => h('span', {class: 'mono'}, s.method)],
          ['Kind', (s) => s.kind + (s.cron ? ` ${s.cron}` : '') + (s.interval ? ` every ${s.interval}` : '')],
          ['Next run', (s) => timeEl(s.next_run_at)],
          ['Payload', (s) => h('code', {class: 'payload'}, JSON.stringify(s.payload ?? null)), {class: 'wide'}],
          ['ID', (s) => h('span', {class: 'mono'}, s.id), {class: 'wide'}],
        ], {empty: 'No schedule.'})),
        section('Fibers', table(fibers, [
          ['Name', (f) => f.name],
          ['Status', (f) => badge(f.status)],
          ['Updated', (f) => timeEl(f.updated_at)],
          ['Error', (f) => f.error ?? '', {class: 'wide'}],
          ['ID', (f) => h('span', {class: 'mono'}, f.id), {class: 'wide'}],
        ], {empty: 'No fiber.'})),
        section('Workflows', table(workflows, [
          ['Instance', (w) => h('a', {href: workflowHref(w.workflow_id), class: 'mono'}, w.workflow_id)],
          ['Class', (w) => w.workflow],
          ['Status', (w) => badge(w.status)],
          ['Updated', (w) => timeEl(w.updated_at), {class: 'wide'}],
        ], {empty: 'This agent started no workflow.'})),
        submissions.length || conversation.length ? [
          section('Submissions', table(submissions, [
            ['#', (s) => s.seq],
            ['Status', (s) => badge(s.status)],
            ['Created', (s) => timeEl(s.created_at)],
            ['Tokens', (s) => `${s.input_tokens} in / ${s.output_tokens} out`, {class: 'wide'}],
            ['Error', (s) => s.error ?? '', {class: 'wide'}],
            ['ID', (s) => h('span', {class: 'mono'}, s.id), {class: 'wide'}],
          ])),
          section('Conversation', conversation.length
            ? h('ol', {class: 'conversation'}, conversation.map((m) => h('li', {class: `msg-${m.message?.role ?? 'other'}`},
              h('span', {class: 'role'}, m.message?.role ?? 'message'), h('div', {class: 'text'}, text(m.message)))))
            : h('p', {class: 'muted'}, 'No message yet.')),
        ] : null,
      ]);
    },
  };
}
