// Small helpers to build the DOM and format what the API answers.

const PROPS = new Set(['value', 'checked', 'disabled', 'selected', 'open', 'hidden']);

// h builds an element: h('a', {href: '#/', class: 'x', onclick: fn}, 'text', child).
// Children may be strings, nodes, arrays of them, or null (skipped).
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props ?? {})) {
    if (v == null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'style') Object.assign(el.style, v);
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (PROPS.has(k)) el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

// update replaces el's children with build(data)'s, unless data is what
// el shows already: polling then leaves the page (and a selection) alone.
export function update(el, data, build) {
  const key = JSON.stringify(data);
  if (el.dataset.key === key) return;
  el.dataset.key = key;
  el.replaceChildren(...[build(data)].flat(Infinity).filter((c) => c != null));
}

export const FINISHED = ['complete', 'errored', 'terminated'];
export const STATUSES = ['queued', 'running', 'paused', 'waitingForPause', 'waiting', 'complete', 'errored', 'terminated'];

export function badge(status) {
  return h('span', {class: `badge s-${status}`}, status);
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

// time formats an RFC 3339 time in local time; the date is left out for today.
export function time(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  const now = new Date();
  const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (d.toDateString() === now.toDateString()) return hms;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms}`;
}

export function timeEl(iso) {
  if (!iso) return h('span', {class: 'muted'}, '—');
  return h('time', {datetime: iso, title: iso}, time(iso));
}

// dur formats a duration in milliseconds: 120ms, 1.5s, 2m 3s, 1h 2m, 3d 4h.
export function dur(ms) {
  if (!Number.isFinite(ms)) return '';
  const neg = ms < 0 ? '-' : '';
  ms = Math.abs(ms);
  if (ms < 1000) return `${neg}${Math.round(ms)}ms`;
  const s = ms / 1000;
  if (s < 60) return `${neg}${s < 10 ? s.toFixed(1) : Math.round(s)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${neg}${m}m ${Math.round(s % 60)}s`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return `${neg}${hr}h ${m % 60}m`;
  return `${neg}${Math.floor(hr / 24)}d ${hr % 24}h`;
}

// json shows a JSON value, indented, in a scrollable block.
export function json(v, attrs) {
  if (v === undefined) return h('p', {class: 'muted'}, 'none');
  return h('pre', {class: 'json', ...attrs}, JSON.stringify(v, null, 2));
}

// table builds a table: cols are [header, cell(row), {class}] triples;
// a column with class "wide" is hidden on narrow screens.
export function table(rows, cols, {empty = 'none', rowAttrs} = {}) {
  if (!rows?.length) return h('p', {class: 'muted empty'}, empty);
  return h('div', {class: 'scroll'},
    h('table', null,
      h('thead', null, h('tr', null, cols.map(([head, , o]) => h('th', {class: o?.class}, head)))),
      h('tbody', null, rows.map((r) => h('tr', rowAttrs?.(r), cols.map(([, cell, o]) => h('td', {class: o?.class}, cell(r))))))));
}

export function section(title, ...children) {
  return h('section', {class: 'card'}, h('h2', null, title), children);
}

export function agentHref(cls, name) {
  return `#/agents/${encodeURIComponent(cls)}/${encodeURIComponent(name)}`;
}

export function workflowHref(id) {
  return `#/workflows/${encodeURIComponent(id)}`;
}
