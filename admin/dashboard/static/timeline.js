// An instance's step timeline as bars on a time axis: each Do attempt a
// bar (failed ones red) with the backoff before its retry dashed, sleeps
// and waits as their own bars, up to their wake time or deadline when
// still pending.

import {FINISHED, dur, h, time} from './dom.js';

const ms = (iso) => (iso ? Date.parse(iso) : NaN);
const ok = Number.isFinite;

// segments returns a step's bars: {from, to, cls, title}, to NaN when open.
function segments(step, now) {
  const out = [];
  const pending = step.state === 'pending';
  const add = (from, to, cls, title) => {
    if (ok(from)) out.push({from, to, cls, title});
  };
  if (step.kind === 'do' && step.attempts?.length) {
    for (const a of step.attempts) {
      const end = ok(ms(a.ended_at)) ? ms(a.ended_at) : now;
      const err = a.error ? `: ${a.error.name}: ${a.error.message}` : '';
      add(ms(a.started_at), end, a.error ? 'fail' : (a.ended_at ? 'ok' : 'run'),
        `attempt ${a.number} ${a.error ? 'failed' : (a.ended_at ? 'succeeded' : 'running')} after ${dur(end - ms(a.started_at))}${err}`);
      if (a.error && a.retry_at) add(end, ms(a.retry_at), 'backoff', `backoff ${dur(ms(a.retry_at) - end)} before attempt ${a.number + 1}`);
    }
    const last = step.attempts.at(-1);
    if (pending && last.error && !last.retry_at && step.wake_at) {
      add(ms(last.ended_at), ms(step.wake_at), 'backoff', `retry (attempt ${step.attempt}) at ${time(step.wake_at)}`);
    }
  } else if (step.kind === 'sleep') {
    add(ms(step.started_at), pending ? ms(step.wake_at) : ms(step.ended_at), `sleep${pending ? ' open' : ''}`,
      pending ? `sleeping until ${time(step.wake_at)}` : `slept ${dur(ms(step.ended_at) - ms(step.started_at))}`);
  } else if (step.kind === 'wait') {
    add(ms(step.started_at), pending ? ms(step.wake_at) : ms(step.ended_at), `wait${pending ? ' open' : ''}`,
      pending ? `waiting for ${step.waiting_event || 'an event'} until ${time(step.wake_at)}`
        : `waited ${dur(ms(step.ended_at) - ms(step.started_at))}`);
  } else {
    const end = pending ? now : ms(step.ended_at);
    add(ms(step.started_at), end, step.state === 'failed' ? 'fail' : (pending ? 'run' : 'ok'), `${step.state} after ${dur(end - ms(step.started_at))}`);
  }
  return out;
}

// stepNote is the line under a step's name: its kind, state and what it waits for.
function stepNote(s) {
  const bits = [s.kind, s.state];
  if (s.kind === 'do' && s.attempts?.length > 1) bits.push(`${s.attempts.length} attempts`);
  if (s.state === 'pending' && s.kind === 'wait' && s.waiting_event) bits.push(`for ${s.waiting_event}`);
  if (s.state === 'pending' && s.kind === 'sleep' && s.wake_at) bits.push(`until ${time(s.wake_at)}`);
  return bits.join(' · ');
}

export function timeline(desc, now = Date.now()) {
  const wf = desc.workflow;
  const steps = desc.steps ?? [];
  const finished = FINISHED.includes(wf.status);
  const rows = steps.map((s) => ({step: s, segs: segments(s, now)}));
  let start = ms(wf.created_at);
  let end = finished ? (ms(wf.finished_at) || ms(wf.updated_at)) : now;
  for (const {segs} of rows) {
    for (const g of segs) {
      start = Math.min(start, g.from);
      if (!g.cls.includes('open') && ok(g.to)) end = Math.max(end, g.to);
    }
  }
  // A pending sleep or wait far in the future would squash the rest:
  // the axis stops a little after now and its bar runs off the edge.
  let far = false;
  for (const {segs} of rows) {
    for (const g of segs) {
      if (g.cls.includes('open') && ok(g.to) && g.to > end) {
        if (g.to - start <= 1.25 * Math.max(end - start, 1000)) end = g.to;
        else far = true;
      }
    }
  }
  if (far) end += Math.max((end - start) * 0.1, 500);
  const span = Math.max(end - start, 1);
  const pct = (t) => `${Math.max(0, Math.min(100, ((t - start) / span) * 100))}%`;

  const axis = h('div', {class: 'tl-axis'},
    [0, 0.25, 0.5, 0.75, 1].map((f) => h('span', {class: 'tick', style: {left: `${f * 100}%`}},
      f === 0 ? time(new Date(start).toISOString()) : `+${dur(f * span)}`)));
  const nowLine = !finished && now <= end ? h('div', {class: 'tl-now', style: {left: pct(now)}, title: 'now'}) : null;

  if (!rows.length) {
    return h('div', {class: 'timeline', id: 'timeline'}, h('p', {class: 'muted'}, `No step has run yet (${wf.status}).`));
  }
  return h('div', {class: 'timeline', id: 'timeline'},
    h('div', {class: 'tl-row tl-head'}, h('div', {class: 'tl-label'}), axis),
    rows.map(({step, segs}) => h('div', {class: `tl-row step-${step.state}`, dataset: {step: step.name, kind: step.kind, state: step.state}},
      h('div', {class: 'tl-label'},
        h('span', {class: 'tl-name', title: step.name}, step.name, step.occurrence > 0 ? ` #${step.occurrence + 1}` : ''),
        h('span', {class: 'tl-note'}, stepNote(step))),
      h('div', {class: 'tl-track'},
        segs.map((g) => {
          const to = ok(g.to) ? Math.min(g.to, end) : end;
          const cut = !ok(g.to) || g.to > end;
          return h('div', {
            class: `bar ${g.cls}${cut ? ' cut' : ''}`, title: g.title,
            style: {left: pct(g.from), width: `max(3px, calc(${pct(to)} - ${pct(g.from)}))`},
          });
        }),
        nowLine?.cloneNode()))),
    h('div', {class: 'tl-legend'},
      [['ok', 'attempt ok'], ['fail', 'attempt failed'], ['backoff', 'retry backoff'], ['sleep', 'sleep'], ['wait', 'wait for event'], ['run', 'running']]
        .map(([c, t]) => h('span', null, h('i', {class: `bar ${c}`}), t))));
}

// stepTable lists the steps with their times, attempts and errors: the
// timeline's details, readable without hovering.
export function stepDetails(desc) {
  const t0 = ms(desc.workflow.created_at);
  const rel = (iso) => (iso ? `+${dur(ms(iso) - t0)}` : '');
  return h('ol', {class: 'steps'}, (desc.steps ?? []).map((s) => h('li', null,
    h('b', null, s.name), ' ', h('span', {class: 'muted'}, `${s.kind} · ${s.state}`),
    s.started_at ? ` · started ${rel(s.started_at)}` : '',
    s.ended_at ? ` · ended ${rel(s.ended_at)} (${dur(ms(s.ended_at) - ms(s.started_at))})` : '',
    s.state === 'pending' && s.wake_at ? ` · ${s.kind === 'wait' ? 'deadline' : s.kind === 'sleep' ? 'wakes' : 'next attempt'} ${time(s.wake_at)}` : '',
    s.error ? h('div', {class: 'err'}, `${s.error.name}: ${s.error.message}`) : null,
    (s.attempts ?? []).filter((a) => a.error).map((a) => h('div', {class: 'attempt'},
      `attempt ${a.number} failed at ${rel(a.ended_at)}: ${a.error.name}: ${a.error.message}`,
      a.retry_at ? ` — retried at ${rel(a.retry_at)}` : '')))));
}
