// A workflow instance: its controls, step timeline, params, output or
// error, and events.

import {api} from '../api.js';
import {FINISHED, agentHref, badge, h, json, section, table, timeEl, update} from '../dom.js';
import {stepDetails, timeline} from '../timeline.js';

// Which controls apply to which status (the API refuses the others with 409).
const CONTROLS = [
  ['pause', 'Pause', (s) => !FINISHED.includes(s) && s !== 'paused' && s !== 'waitingForPause'],
  ['resume', 'Resume', (s) => s === 'paused' || s === 'waitingForPause'],
  ['terminate', 'Terminate', (s) => !FINISHED.includes(s), 'Terminate this instance? It ends as terminated and cannot be resumed.'],
  ['restart', 'Restart', () => true, 'Restart this instance from its first step? Its steps and output are discarded.'],
];

export function workflowView(root, [id], _query, app) {
  let status = '';
  const msg = h('p', {id: 'action-msg', class: 'msg', role: 'status'});
  const say = (text, bad) => {
    msg.textContent = text;
    msg.classList.toggle('bad', !!bad);
  };
  const buttons = CONTROLS.map(([action, label, , confirmText]) => h('button', {
    type: 'button', dataset: {action}, disabled: true, class: action === 'terminate' ? 'danger' : '',
    onclick: () => control(action, confirmText),
  }, label));

  async function control(action, confirmText) {
    if (confirmText && !confirm(confirmText)) return;
    for (const b of buttons) b.disabled = true;
    try {
      const w = await api(`workflows/${encodeURIComponent(id)}/${action}`, {method: 'POST'});
      say(`${action}: now ${w.status}`);
    } catch (err) {
      say(`${action} refused: ${err.message}`, true);
    }
    app.refreshNow();
  }

  const evType = h('input', {name: 'type', placeholder: 'event type', required: true, autocomplete: 'off', pattern: '[A-Za-z0-9_][A-Za-z0-9_.:\\-]{0,99}'});
  const evPayload = h('textarea', {name: 'payload', rows: 2, placeholder: 'payload (JSON, optional)'});
  const sendBtn = h('button', {type: 'submit'}, 'Send event');
  async function sendEvent(e) {
    e.preventDefault();
    let payload;
    if (evPayload.value.trim()) {
      try {
        payload = JSON.parse(evPayload.value);
      } catch (err) {
        say(`the payload is not valid JSON: ${err.message}`, true);
        return;
      }
    }
    try {
      await api(`workflows/${encodeURIComponent(id)}/events`, {method: 'POST', body: {type: evType.value.trim(), payload}});
      say(`sent ${evType.value.trim()}`);
      evType.value = '';
      evPayload.value = '';
    } catch (err) {
      say(`send-event refused: ${err.message}`, true);
    }
    app.refreshNow();
  }

  const head = h('div', {class: 'title'});
  const facts = h('dl', {class: 'facts'});
  const tl = h('div');
  const details = h('div');
  const io = h('div', {class: 'grid2'});
  const events = h('div', {id: 'events'});

  root.append(
    head,
    h('section', {class: 'card controls'},
      h('div', {class: 'row'}, buttons),
      h('form', {class: 'row event-form', onsubmit: sendEvent}, evType, evPayload, sendBtn),
      msg),
    section('Timeline', tl, details),
    io,
    section('Events', events),
    section('Details', facts));

  return {
    async refresh() {
      const d = await api(`workflows/${encodeURIComponent(id)}`);
      const w = d.workflow;
      status = w.status;
      for (const [i, [, , applies]] of CONTROLS.entries()) buttons[i].disabled = !applies(status);
      sendBtn.disabled = FINISHED.includes(status);
      update(head, [w.id, w.workflow, w.status], () => [
        h('a', {href: '#/', class: 'back'}, '← instances'),
        h('h1', null, h('span', {class: 'mono'}, w.id), ' ', h('span', {id: 'wf-status', dataset: {status: w.status}}, badge(w.status))),
        h('p', {class: 'muted'}, `${w.workflow}${w.service ? ` · service ${w.service}` : ''}`),
      ]);
      // The timeline moves with the clock while the instance runs.
      const tick = FINISHED.includes(w.status) ? 0 : Math.floor(Date.now() / 1000);
      update(tl, [d, tick], () => timeline(d));
      update(details, d.steps, () => stepDetails(d));
      update(io, [w.params, w.output, w.error], () => [
        section('Params', json(w.params, {id: 'wf-params'})),
        w.error
          ? section('Error', h('pre', {class: 'json err', id: 'wf-error'}, `${w.error.name}: ${w.error.message}`))
          : section('Output', json(w.output, {id: 'wf-output'})),
      ]);
      update(events, d.events, (evs) => table(evs, [
        ['#', (e) => e.seq],
        ['Type', (e) => h('span', {class: 'mono'}, e.type)],
        ['Sent', (e) => timeEl(e.sent_at)],
        ['Consumed', (e) => (e.consumed ? timeEl(e.consumed_at) : h('span', {class: 'muted'}, 'buffered'))],
        ['Payload', (e) => h('code', {class: 'payload'}, JSON.stringify(e.payload ?? null))],
      ], {empty: 'No event was sent to this instance.'}));
      update(facts, w, () => [
        ['Created', timeEl(w.created_at)],
        ['Updated', timeEl(w.updated_at)],
        w.finished_at && ['Finished', timeEl(w.finished_at)],
        w.wake_at && !FINISHED.includes(w.status) && ['Wakes', timeEl(w.wake_at)],
        w.waiting_event && ['Waiting for', h('span', {class: 'mono'}, w.waiting_event)],
        w.paused_at && ['Paused at', timeEl(w.paused_at)],
        w.owner && ['Worker', w.owner],
        ['Restarts', w.restarts],
        w.origin && ['Started by', h('a', {href: agentHref(w.origin.class, w.origin.name)}, `${w.origin.class}/${w.origin.name}`)],
      ].filter(Boolean).map(([k, v]) => [h('dt', null, k), h('dd', null, v)]));
    },
  };
}
