// The Think outbox: messages telling waiting workflow instances that a
// submission ended, newest first.

import {api} from '../api.js';
import {agentHref, h, table, timeEl, update, workflowHref} from '../dom.js';

export function outboxView(root, _params, query, app) {
  let undelivered = query.get('undelivered') === 'true';
  let tokens = [''];
  let next = '';
  const box = h('input', {type: 'checkbox', id: 'f-undelivered', checked: undelivered, onchange: () => {
    undelivered = box.checked;
    tokens = [''];
    app.setQuery({undelivered: undelivered ? 'true' : ''});
    app.refreshNow();
  }});
  const list = h('div', {id: 'outbox'});
  const prev = h('button', {type: 'button', disabled: true, onclick: () => page(-1)}, '← newer');
  const more = h('button', {type: 'button', disabled: true, onclick: () => page(1)}, 'older →');
  function page(d) {
    if (d > 0 && next) tokens.push(next);
    if (d < 0 && tokens.length > 1) tokens.pop();
    app.refreshNow();
  }
  root.append(
    h('div', {class: 'title'}, h('h1', null, 'Outbox'),
      h('p', {class: 'muted'}, 'Messages from Think agents to the workflow instances waiting for their submissions.')),
    h('form', {class: 'filters'}, h('label', {class: 'check'}, box, ' undelivered only')),
    list,
    h('div', {class: 'pager'}, prev, more));
  return {
    async refresh() {
      const p = await api('outbox', {query: {undelivered: undelivered ? 'true' : '', limit: 100, page_token: tokens.at(-1)}});
      next = p.next_page_token ?? '';
      prev.disabled = tokens.length === 1;
      more.disabled = !next;
      update(list, p.outbox, (rows) => table(rows, [
        ['#', (o) => o.id],
        ['Agent', (o) => h('a', {href: agentHref(o.class, o.name)}, `${o.class}/${o.name}`)],
        ['Instance', (o) => h('a', {href: workflowHref(o.instance_id), class: 'mono'}, o.instance_id)],
        ['Event', (o) => h('span', {class: 'mono'}, o.event_type)],
        ['Delivered', (o) => (o.delivered_at ? timeEl(o.delivered_at)
          : h('span', {class: o.failed ? 'bad' : 'muted'}, o.failed ? 'failed' : `pending (attempt ${o.attempts})`))],
        ['Last error', (o) => o.last_error ?? '', {class: 'wide'}],
        ['Submission', (o) => h('span', {class: 'mono'}, o.submission_id), {class: 'wide'}],
      ], {empty: 'The outbox is empty.'}));
    },
  };
}
