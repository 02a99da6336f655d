// The agent list, by class then name, filtered by class.

import {api} from '../api.js';
import {agentHref, h, table, timeEl, update} from '../dom.js';

const PAGE = 100;

export function agentsView(root, _params, query, app) {
  let cls = query.get('class') ?? '';
  let tokens = [''];
  let next = '';
  const input = h('input', {id: 'f-class', name: 'class', value: cls, placeholder: 'any', autocomplete: 'off'});
  const list = h('div', {id: 'agents'});
  const prev = h('button', {type: 'button', disabled: true, onclick: () => page(-1)}, '← previous');
  const more = h('button', {type: 'button', disabled: true, onclick: () => page(1)}, 'next →');

  function apply(e) {
    e?.preventDefault();
    cls = input.value.trim();
    tokens = [''];
    app.setQuery({class: cls});
    app.refreshNow();
  }
  function page(d) {
    if (d > 0 && next) tokens.push(next);
    if (d < 0 && tokens.length > 1) tokens.pop();
    app.refreshNow();
  }
  function filterClass(c) {
    input.value = c;
    apply();
  }

  root.append(
    h('div', {class: 'title'}, h('h1', null, 'Agents')),
    h('form', {class: 'filters', onsubmit: apply},
      h('label', null, 'Class ', input),
      h('button', {type: 'submit', class: 'primary'}, 'Filter')),
    list,
    h('div', {class: 'pager'}, prev, more));

  return {
    async refresh() {
      const p = await api('agents', {query: {class: cls, limit: PAGE, page_token: tokens.at(-1)}});
      next = p.next_page_token ?? '';
      prev.disabled = tokens.length === 1;
      more.disabled = !next;
      update(list, p.agents, (as) => table(as, [
        ['Class', (a) => h('button', {type: 'button', class: 'link', title: `only ${a.class}`, onclick: () => filterClass(a.class)}, a.class)],
        ['Name', (a) => h('a', {href: agentHref(a.class, a.name), class: 'mono'}, a.name)],
        ['Live on', (a) => a.owner || h('span', {class: 'muted'}, 'nowhere')],
        ['Last activity', (a) => timeEl(a.updated_at)],
        ['State', (a) => `${a.state_bytes} B`, {class: 'wide'}],
        ['Created', (a) => timeEl(a.created_at), {class: 'wide'}],
      ], {empty: 'No agent instance yet.', rowAttrs: (a) => ({class: 'agent-row', dataset: {class: a.class, name: a.name}})}));
    },
  };
}
