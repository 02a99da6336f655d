// The workflow instance list: filters, live status counts, newest first.

import {api} from '../api.js';
import {STATUSES, badge, h, table, timeEl, update, workflowHref} from '../dom.js';

const PAGE = 50;

export function workflowsView(root, _params, query, app) {
  const f = {
    status: query.get('status') ?? '',
    workflow: query.get('workflow') ?? '',
    service: query.get('service') ?? '',
  };
  // tokens[i] is the page_token of page i; page 0 has none.
  let tokens = [''];
  let next = '';

  const status = h('select', {id: 'f-status', name: 'status', onchange: apply},
    h('option', {value: ''}, 'any'),
    STATUSES.map((s) => h('option', {value: s, selected: s === f.status}, s)));
  const cls = h('input', {id: 'f-workflow', name: 'workflow', value: f.workflow, placeholder: 'any', autocomplete: 'off'});
  const svc = h('input', {id: 'f-service', name: 'service', value: f.service, placeholder: 'any', autocomplete: 'off'});
  const counts = h('div', {id: 'counts', class: 'counts'});
  const list = h('div', {id: 'workflows'});
  const prev = h('button', {type: 'button', disabled: true, onclick: () => page(-1)}, '← newer');
  const more = h('button', {type: 'button', disabled: true, onclick: () => page(1)}, 'older →');
  const where = h('span', {class: 'muted'});

  function apply(e) {
    e?.preventDefault();
    f.status = status.value;
    f.workflow = cls.value.trim();
    f.service = svc.value.trim();
    tokens = [''];
    app.setQuery(f);
    app.refreshNow();
  }

  function page(d) {
    if (d > 0 && next) tokens.push(next);
    if (d < 0 && tokens.length > 1) tokens.pop();
    app.refreshNow();
  }

  function setStatus(s) {
    status.value = f.status === s ? '' : s;
    apply();
  }

  root.append(
    h('div', {class: 'title'}, h('h1', null, 'Workflow instances')),
    counts,
    h('form', {class: 'filters', onsubmit: apply},
      h('label', null, 'Status ', status),
      h('label', null, 'Class ', cls),
      h('label', null, 'Service ', svc),
      h('button', {type: 'submit', class: 'primary'}, 'Filter')),
    list,
    h('div', {class: 'pager'}, prev, where, more));

  return {
    async refresh() {
      const filter = {workflow: f.workflow, service: f.service};
      const [c, p] = await Promise.all([
        api('workflow-counts', {query: filter}),
        api('workflows', {query: {...filter, status: f.status, limit: PAGE, page_token: tokens.at(-1)}}),
      ]);
      update(counts, [c, f.status], () => [
        h('button', {type: 'button', class: `count${f.status === '' ? ' on' : ''}`, onclick: () => setStatus('')},
          h('b', null, c.total), ' all'),
        STATUSES.map((s) => h('button', {
          type: 'button', class: `count c-${s}${f.status === s ? ' on' : ''}`, dataset: {status: s},
          onclick: () => setStatus(s),
        }, h('b', null, c.counts[s] ?? 0), ` ${s}`)),
      ]);
      next = p.next_page_token ?? '';
      prev.disabled = tokens.length === 1;
      more.disabled = !next;
      where.textContent = `page ${tokens.length}`;
      update(list, p.workflows, (ws) => table(ws, [
        ['Instance', (w) => h('a', {href: workflowHref(w.id), class: 'mono'}, w.id)],
        ['Class', (w) => w.workflow],
        ['Status', (w) => badge(w.status)],
        ['Service', (w) => w.service || h('span', {class: 'muted'}, 'default'), {class: 'wide'}],
        ['Created', (w) => timeEl(w.created_at), {class: 'wide'}],
        ['Updated', (w) => timeEl(w.updated_at)],
      ], {empty: 'No instance matches these filters.', rowAttrs: (w) => ({class: 'wf-row', dataset: {id: w.id, status: w.status}})}));
    },
  };
}
