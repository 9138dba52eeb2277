// The console's shell: navigation and the live refresh loop. Each
// page is a module whose mount(root, params) builds it and returns { refresh, unmount }.
import { replace } from './dom.js';
import { onRefresh } from './ui.js';
import { api } from './api.js';
import * as overview from './pages/overview.js';
import * as topics from './pages/topics.js';
import * as subscriptions from './pages/subscriptions.js';
import * as groups from './pages/groups.js';

/** How often pages read the API again, in milliseconds. */
export const REFRESH_MS = 1500;

const routes = [
  { pattern: /^\/?$/, page: overview, nav: 'overview' },
  { pattern: /^\/overview$/, page: overview, nav: 'overview' },
  { pattern: /^\/topics$/, page: topics, nav: 'topics', view: 'list' },
  { pattern: /^\/topics\/([^/]+)$/, page: topics, nav: 'topics', view: 'detail' },
  { pattern: /^\/subscriptions$/, page: subscriptions, nav: 'subscriptions', view: 'list' },
  { pattern: /^\/subscriptions\/([^/]+)$/, page: subscriptions, nav: 'subscriptions', view: 'detail' },
  { pattern: /^\/groups$/, page: groups, nav: 'groups', view: 'list' },
  { pattern: /^\/groups\/([^/]+)$/, page: groups, nav: 'groups', view: 'detail' },
];

let current = null;
let refreshing = false;

let again = false;

/** Refreshes the current page; asked during a refresh, runs once more after it. */
async function refreshNow() {
  if (!current) return;
  if (refreshing) {
    again = true;
    return;
  }
  refreshing = true;
  try {
    do {
      again = false;
      const page = current;
      try {
        await page.handle.refresh();
        if (page === current) setStatus(true);
      } catch (e) {
        if (page === current) setStatus(false, e);
      }
    } while (again);
  } finally {
    refreshing = false;
  }
}

function setStatus(ok, error) {
  const status = document.getElementById('live-status');
  const now = new Date();
  const time = now.toTimeString().slice(0, 8);
  status.className = ok ? 'live live-ok' : 'live live-bad';
  status.textContent = ok ? `Live · ${time}` : `Not answering · ${time}`;
  status.title = ok ? 'The page reads the API every 1.5 s.' : String(error && error.message);
}

async function checkHealth() {
  const health = document.getElementById('health');
  try {
    const r = await api.ready();
    health.className = 'health health-ok';
    health.textContent = r && r.status === 'ready' ? 'Ready' : 'Answering';
  } catch {
    health.className = 'health health-bad';
    health.textContent = 'Not ready';
  }
}

function route() {
  const path = window.location.hash.replace(/^#/, '') || '/';
  const found = routes.find((r) => r.pattern.test(path)) || routes[0];
  const params = (path.match(found.pattern) || []).slice(1).map(decodeURIComponent);
  if (current) current.handle.unmount();
  for (const a of document.querySelectorAll('nav a')) {
    a.classList.toggle('active', a.dataset.nav === found.nav);
  }
  document.getElementById('notices').replaceChildren();
  const root = document.getElementById('page');
  replace(root);
  current = { handle: found.page.mount(root, { view: found.view, params }) };
  window.scrollTo(0, 0);
  refreshNow();
}

function start() {
  onRefresh(refreshNow);
  window.addEventListener('hashchange', route);
  route();
  checkHealth();
  setInterval(() => {
    if (document.hidden) return;
    refreshNow();
    checkHealth();
  }, REFRESH_MS);
}

start();
