// The dashboard's entry point: a hash router over the views, and the
// poller that refreshes the current view every POLL_MS while the tab is
// visible.

import {forgetToken, token} from './api.js';
import {workflowsView} from './views/workflows.js';
import {workflowView} from './views/workflow.js';
import {agentsView} from './views/agents.js';
import {agentView} from './views/agent.js';
import {outboxView} from './views/outbox.js';

const POLL_MS = 1500;

// routes: [pattern over the hash's path, view, nav section].
const routes = [
  [/^\/?$/, workflowsView, 'workflows'],
  [/^\/workflows\/?$/, workflowsView, 'workflows'],
  [/^\/workflows\/([^/]+)$/, workflowView, 'workflows'],
  [/^\/agents\/?$/, agentsView, 'agents'],
  [/^\/agents\/([^/]+)\/([^/]+)$/, agentView, 'agents'],
  [/^\/outbox\/?$/, outboxView, 'outbox'],
];

const main = document.getElementById('main');
const live = document.getElementById('live');
const banner = document.getElementById('banner');
const forget = document.getElementById('forget-token');

let view = null;
let generation = 0;
let timer = 0;
let wake = null;

function showError(err) {
  if (!err) {
    banner.hidden = true;
    return;
  }
  banner.hidden = false;
  banner.textContent = err.code ? `${err.code}: ${err.message}` : String(err.message ?? err);
}

// app is what views get: navigation, an immediate refresh, and the error banner.
const app = {
  navigate(hash) {
    location.hash = hash;
  },
  // setQuery records the view's filters in the address without remounting it.
  setQuery(params) {
    const [path] = location.hash.slice(1).split('?');
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
    const qs = q.toString();
    history.replaceState(null, '', `#${path || '/'}${qs ? `?${qs}` : ''}`);
  },
  refreshNow() {
    wake?.();
  },
  showError,
};

function mount() {
  const [path, qs] = location.hash.slice(1).split('?');
  let found = null;
  for (const [re, fn, nav] of routes) {
    const m = re.exec(path || '/');
    if (m) {
      found = {fn, nav, params: m.slice(1).map(decodeURIComponent)};
      break;
    }
  }
  for (const a of document.querySelectorAll('[data-nav]')) {
    a.classList.toggle('active', a.dataset.nav === found?.nav);
  }
  showError(null);
  main.replaceChildren();
  if (!found) {
    view = null;
    showError({message: `no page ${path}; try the workflows list`});
    return;
  }
  view = found.fn(main, found.params, new URLSearchParams(qs ?? ''), app);
  poll(++generation);
}

async function poll(gen) {
  clearTimeout(timer);
  if (gen !== generation) return;
  if (!document.hidden && view) {
    try {
      await view.refresh();
      if (gen !== generation) return;
      showError(null);
      live.textContent = `live · ${new Date().toLocaleTimeString()}`;
      live.classList.remove('down');
    } catch (err) {
      if (gen !== generation) return;
      showError(err);
      live.textContent = err.status ? 'live · error' : 'offline';
      live.classList.toggle('down', !err.status);
    }
  }
  forget.hidden = !token();
  if (gen !== generation) return;
  await new Promise((resolve) => {
    wake = resolve;
    timer = setTimeout(resolve, POLL_MS);
  });
  wake = null;
  poll(gen);
}

forget.addEventListener('click', () => {
  forgetToken();
  forget.hidden = true;
  app.refreshNow();
});
document.addEventListener('visibilitychange', () => {
  if (!document.hidden) app.refreshNow();
});
window.addEventListener('hashchange', mount);
mount();
