// Vitrine admin dashboard: key prompt, overview, ingest jobs, product editor, search playground, health.
import {
  api, ApiError, h, fill, s, icon, hydrateIcons, formatPrice, formatNumber, formatBytes, formatDuration, formatMs,
  formatTime, debounce, imgOrPlaceholder, isImageFile, prepareImage, announce,
} from './common.js';

const KEY_STORAGE = 'vitrine.adminKey';
const $ = (id) => document.getElementById(id);

hydrateIcons();

// ======================================================================
// Auth
// ======================================================================

let adminKey = null;
const timers = { overview: null, jobs: null, health: null };

function storedKey() {
  try { return sessionStorage.getItem(KEY_STORAGE); } catch { return null; }
}

function storeKey(k) {
  try {
    if (k) sessionStorage.setItem(KEY_STORAGE, k); else sessionStorage.removeItem(KEY_STORAGE);
  } catch { /* storage disabled: keep the key in memory only */ }
}

/** Calls the API with the admin key; a 401/403 anywhere signs out with the server's message. */
async function adminApi(path, opts = {}) {
  if (!adminKey) throw new ApiError(401, 'unauthorized', 'Not signed in.');
  try {
    const res = await api(path, { ...opts, key: adminKey });
    setConn(true);
    return res;
  } catch (err) {
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
      signOut(`The admin key was rejected: ${err.message}`);
    } else if (err instanceof ApiError && err.status === 0) {
      setConn(false);
    }
    throw err;
  }
}

function setConn(ok) {
  $('conn').classList.toggle('bad', !ok);
  $('conn-text').textContent = ok ? 'Connected' : 'Server unreachable';
}

function showAuth(message) {
  $('app').hidden = true;
  $('auth').hidden = false;
  const errEl = $('auth-error');
  if (message) {
    errEl.textContent = message;
    errEl.hidden = false;
  } else {
    errEl.hidden = true;
    errEl.textContent = '';
  }
  const input = $('admin-key');
  input.disabled = false;
  $('auth-submit').disabled = false;
  input.focus();
  document.title = 'Sign in · Vitrine admin';
}

function signOut(message) {
  adminKey = null;
  storeKey(null);
  stopAllTimers();
  clearDashboard();
  showAuth(message);
}

/** Verifies a key against /v1/stats; shows the dashboard only when it is accepted. */
async function trySignIn(key) {
  const input = $('admin-key');
  const submit = $('auth-submit');
  input.disabled = true;
  submit.disabled = true;
  $('auth-error').hidden = true;
  try {
    const stats = await api('/v1/stats', { key });
    adminKey = key;
    storeKey(key);
    $('auth').hidden = true;
    $('app').hidden = false;
    input.value = '';
    renderOverview(stats);
    selectTab(tabFromHash(), { focus: false });
    refreshJobs();
  } catch (err) {
    storeKey(null);
    adminKey = null;
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
      showAuth(err.status === 403 ? `Wrong admin key: ${err.message}` : `Admin key required: ${err.message}`);
    } else {
      showAuth(`Could not sign in: ${err.message}`);
    }
  }
}

$('auth-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const key = $('admin-key').value.trim();
  if (!key) {
    showAuth('Please enter the admin key.');
    return;
  }
  trySignIn(key);
});

$('logout').addEventListener('click', () => signOut(null));

function stopAllTimers() {
  for (const k of Object.keys(timers)) {
    clearTimeout(timers[k]);
    timers[k] = null;
  }
}

/** Removes every piece of data rendered from the API (nothing stays in the DOM after sign-out). */
function clearDashboard() {
  $('overview').replaceChildren();
  $('overview-updated').textContent = '';
  $('jobs-body').replaceChildren();
  $('products-body').replaceChildren();
  closeEditor();
  $('pg-a').replaceChildren();
  $('pg-b').replaceChildren();
  $('pg-results').hidden = true;
  $('health').replaceChildren();
  for (const id of ['overview-error', 'health-error', 'pg-error', 'products-message', 'ingest-message']) $(id).hidden = true;
  lastJobs = [];
  productsState.loaded = false;
}

// ======================================================================
// Tabs
// ======================================================================

const TABS = ['overview', 'ingest', 'products', 'playground', 'health', 'relevance'];
let currentTab = null;

function tabFromHash() {
  const t = location.hash.replace('#', '');
  return TABS.includes(t) ? t : 'overview';
}

function selectTab(name, { focus = true, updateHash = true } = {}) {
  if (!TABS.includes(name)) name = 'overview';
  currentTab = name;
  for (const t of TABS) {
    const tab = $(`tab-${t}`);
    const on = t === name;
    tab.setAttribute('aria-selected', String(on));
    tab.tabIndex = on ? 0 : -1;
    $(`panel-${t}`).hidden = !on;
  }
  if (focus) $(`tab-${name}`).focus();
  if (updateHash && location.hash !== `#${name}`) history.replaceState(null, '', `#${name}`);
  document.title = `${$(`tab-${name}`).textContent.trim()} · Vitrine admin`;

  clearTimeout(timers.overview);
  clearTimeout(timers.health);
  timers.overview = null;
  timers.health = null;
  if (name === 'overview') refreshOverview();
  if (name === 'ingest') refreshJobs();
  if (name === 'products' && !productsState.loaded) loadProducts();
  if (name === 'health') refreshHealth();
}

$('tabs').addEventListener('click', (e) => {
  const tab = e.target.closest('[role="tab"]');
  if (tab) selectTab(tab.dataset.tab, { focus: false });
});
$('tabs').addEventListener('keydown', (e) => {
  const i = TABS.indexOf(currentTab);
  let next = null;
  if (e.key === 'ArrowRight') next = TABS[(i + 1) % TABS.length];
  else if (e.key === 'ArrowLeft') next = TABS[(i - 1 + TABS.length) % TABS.length];
  else if (e.key === 'Home') next = TABS[0];
  else if (e.key === 'End') next = TABS[TABS.length - 1];
  if (next) {
    e.preventDefault();
    selectTab(next);
  }
});
window.addEventListener('hashchange', () => {
  if (adminKey) selectTab(tabFromHash(), { focus: false, updateHash: false });
});

// ======================================================================
// Overview
// ======================================================================

async function refreshOverview() {
  clearTimeout(timers.overview);
  try {
    const stats = await adminApi('/v1/stats');
    renderOverview(stats);
    $('overview-error').hidden = true;
  } catch (err) {
    if (!adminKey) return;
    $('overview-error').textContent = `Could not load stats: ${err.message}`;
    $('overview-error').hidden = false;
  }
  if (adminKey && currentTab === 'overview') timers.overview = setTimeout(refreshOverview, 5000);
}

function stat(key, label, value, { sub = null, small = false, title = null } = {}) {
  return h('div', { class: 'stat' },
    h('span', { class: 'label' }, label),
    h('span', { class: `value${small ? ' small' : ''}`, 'data-stat': key, title }, value),
    sub ? h('span', { class: 'sub' }, sub) : null);
}

function renderOverview(st) {
  if (!st || typeof st !== 'object') return;
  const model = st.model || {};
  const q = st.queue || {};
  fill($('overview'), 
    h('h3', { class: 'stats-group' }, 'Catalog and index'),
    stat('products', 'Products', formatNumber(st.products)),
    stat('images', 'Images', formatNumber(st.images)),
    stat('vectors', 'Vectors', formatNumber(st.vectors)),
    stat('tombstones', 'Tombstones', formatNumber(st.tombstones), { sub: 'deleted vectors awaiting compaction' }),
    stat('disk_bytes', 'Disk size', formatBytes(st.disk_bytes), { title: `${formatNumber(st.disk_bytes)} bytes` }),
    stat('generation', 'Index generation', formatNumber(st.generation), { sub: 'bumps on every index change' }),
    h('h3', { class: 'stats-group' }, 'Model and runtime'),
    stat('model', 'Model', model.name || '—', { small: String(model.name || '').length > 12, sub: model.content_hash ? `hash ${String(model.content_hash).slice(0, 16)}` : null, title: model.content_hash || null }),
    stat('dim', 'Dimension', formatNumber(model.dim), { sub: 'embedding size' }),
    stat('device', 'Device', st.device ? String(st.device).toUpperCase() : '—'),
    stat('uptime_s', 'Uptime', formatDuration(st.uptime_s)),
    stat('queue', 'Queue', q.capacity !== undefined ? `${formatNumber(q.depth)} / ${formatNumber(q.capacity)}` : '—', { sub: 'depth / capacity' }),
  );
  $('overview-updated').textContent = `Updated ${new Date().toLocaleTimeString()} · refreshes every 5 s`;
}

// ======================================================================
// Ingest + jobs
// ======================================================================

let lastJobs = [];
const ACTIVE = new Set(['queued', 'running']);

const CATALOG_RE = /\.(jsonl|ndjson|json|csv)$/i;

/**
 * What the import form sends: a zip as it is (application/zip), a lone catalog as multipart
 * `file`, or a folder as multipart: its catalog in `file` and every other file as a part named
 * by its path relative to the catalog's folder (what the catalog's relative image paths use).
 */
async function ingestBody() {
  const file = $('ingest-file').files?.[0];
  const folder = Array.from($('ingest-folder').files || []);
  if (file && /\.zip$/i.test(file.name)) return { body: file, type: 'application/zip', label: file.name };
  const fd = new FormData();
  if (!folder.length) {
    if (!file) return null;
    fd.append('file', file, file.name);
    return { body: fd, label: file.name };
  }
  const rel = (f) => f.webkitRelativePath || f.name;
  // The shallowest catalog; JSON Lines before CSV when a folder holds both (CSV is often a partial export).
  const depth = (f) => rel(f).split('/').length;
  const csv = (f) => (/\.csv$/i.test(f.name) ? 1 : 0);
  const catalogs = folder.filter((f) => CATALOG_RE.test(f.name)).sort((a, b) => depth(a) - depth(b) || csv(a) - csv(b) || rel(a).localeCompare(rel(b)));
  const catalog = file || catalogs[0];
  if (!catalog) return { error: 'The folder holds no catalog (.jsonl, .ndjson, .json or .csv).' };
  const base = file ? rel(folder[0]).split('/')[0] + '/' : rel(catalog).replace(/[^/]*$/, '');
  fd.append('file', catalog, catalog.name);
  const wanted = await referencedPaths(catalog);
  let images = 0;
  for (const f of folder) {
    if (f === catalog || CATALOG_RE.test(f.name) || !rel(f).startsWith(base) || f.name.startsWith('.')) continue;
    // Only what the catalog names: a folder may hold other catalogs' files (demo/ holds the toy world).
    if (wanted && !wanted.has(rel(f).slice(base.length))) continue;
    fd.append('images', f, rel(f).slice(base.length));
    images += 1;
  }
  return { body: fd, label: `${catalog.name} with ${images} image file${images === 1 ? '' : 's'}` };
}

/**
 * The relative image paths a JSON Lines catalog names (`image`, `images`), or null when they cannot
 * be read here (CSV, a file too large to read in the page): then every file of the folder is sent.
 */
async function referencedPaths(catalog) {
  if (!/\.(jsonl|ndjson)$/i.test(catalog.name) || catalog.size > 64 * 1024 * 1024) return null;
  const paths = new Set();
  for (const line of (await catalog.text()).split('\n')) {
    let row;
    try { row = JSON.parse(line); } catch { continue; }
    for (const v of [row?.image, ...(Array.isArray(row?.images) ? row.images : [])]) {
      if (typeof v === 'string' && !/^[a-z]+:\/\//i.test(v)) paths.add(v.replace(/^\.\//, ''));
    }
  }
  return paths;
}

$('ingest-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const fileInput = $('ingest-file');
  const msg = $('ingest-message');
  const sending = await ingestBody();
  if (!sending || sending.error) {
    showMessage(msg, 'error', sending?.error || 'Choose a catalog file, a .zip, or a folder first.');
    fileInput.focus();
    return;
  }
  const qs = $('ingest-delete-missing').checked ? '?delete_missing=true' : '';
  const btn = $('ingest-submit');
  btn.disabled = true;
  showMessage(msg, 'info', `Uploading ${sending.label}…`, true);
  try {
    const opts = { method: 'POST', body: sending.body };
    if (sending.type) opts.headers = { 'Content-Type': sending.type };
    const res = await adminApi(`/v1/ingest${qs}`, opts);
    showMessage(msg, 'success', `Import started (job ${res?.job_id ?? '?'}). Progress is shown below.`);
    fileInput.value = '';
    $('ingest-folder').value = '';
    $('ingest-delete-missing').checked = false;
    await refreshJobs();
  } catch (err) {
    if (adminKey) showMessage(msg, 'error', `Import failed: ${err.message}`);
  } finally {
    btn.disabled = false;
  }
});

function showMessage(el, kind, text, spinner = false) {
  el.className = `alert alert-${kind}`;
  el.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  fill(el, ...(spinner ? [h('span', { class: 'spinner' })] : []), h('span', {}, text));
  el.hidden = false;
}

async function refreshJobs() {
  clearTimeout(timers.jobs);
  timers.jobs = null;
  let jobs;
  try {
    const res = await adminApi('/v1/jobs');
    jobs = Array.isArray(res?.jobs) ? res.jobs : [];
  } catch (err) {
    if (!adminKey) return;
    $('jobs-updated').textContent = `Could not load jobs: ${err.message}`;
    timers.jobs = setTimeout(refreshJobs, 3000);
    return;
  }
  const wasActive = lastJobs.some((j) => ACTIVE.has(j.state));
  lastJobs = jobs;
  renderJobs(jobs);
  const active = jobs.some((j) => ACTIVE.has(j.state));
  $('jobs-updated').textContent = active ? 'Live · updates every second' : `Updated ${new Date().toLocaleTimeString()}`;
  if (wasActive && !active) {
    announce('Import finished');
    productsState.loaded = false; // the catalog changed
    if (currentTab === 'products') loadProducts();
  }
  if (adminKey && active) timers.jobs = setTimeout(refreshJobs, 1000);
}

function renderJobs(jobs) {
  const body = $('jobs-body');
  if (!jobs.length) {
    fill(body, h('tr', { class: 'empty-row' }, h('td', { colspan: 7 }, 'No import jobs yet. Upload a catalog above to start one.')));
    return;
  }
  fill(body, ...jobs.flatMap((j) => (openReport === j.id ? [renderJob(j), reportRow(j)] : [renderJob(j)])));
}

function renderJob(j) {
  const total = Number(j.total) || 0;
  const processed = Number(j.processed) || 0;
  const pct = total > 0 ? Math.min(100, (processed / total) * 100) : (j.state === 'done' ? 100 : 0);
  const c = j.counts || {};
  const indeterminate = j.state === 'running' && !total;
  const failedCount = Number(c.failed) || 0;
  const warnCount = Number(j.warnings) || 0;
  const created = formatTime(j.created_at);
  return h('tr', { 'data-testid': 'job-row', 'data-state': j.state, 'data-job-id': j.id },
    h('td', {},
      h('div', { class: 'mono', title: j.id }, String(j.id).length > 14 ? `${String(j.id).slice(0, 12)}…` : j.id),
      h('div', { class: 'muted', style: { fontSize: '12px' } }, created)),
    h('td', {},
      h('span', { class: `badge badge-${j.state}`, 'data-testid': 'job-state' }, j.state),
      j.error ? h('div', { class: 'muted', style: { fontSize: '12px', color: 'var(--danger)', maxWidth: '220px' } }, String(j.error)) : null),
    h('td', {},
      h('div', {
        class: `progress${j.state === 'done' ? ' done' : ''}${j.state === 'failed' ? ' failed' : ''}${indeterminate ? ' indeterminate' : ''}`,
        role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': String(total || 100), 'aria-valuenow': String(total ? processed : Math.round(pct)),
        'aria-label': `Job ${j.id} progress`,
      }, h('span', { style: { width: `${pct}%` } })),
      h('div', { class: 'progress-label' }, `${formatNumber(processed)} / ${total ? formatNumber(total) : '?'}${total ? ` · ${Math.floor(pct)}%` : ''}`)),
    h('td', { class: 'num' }, Number.isFinite(j.rate_per_s) && j.rate_per_s > 0 ? `${j.rate_per_s.toFixed(j.rate_per_s < 10 ? 1 : 0)}/s` : '—'),
    h('td', { class: 'num' }, ACTIVE.has(j.state) && Number.isFinite(j.eta_s) ? formatDuration(j.eta_s) : '—'),
    h('td', {}, h('div', { class: 'counts' },
      h('span', { title: 'new products' }, h('b', {}, formatNumber(c.ingested ?? 0)), ' new'),
      h('span', { title: 'updated products' }, h('b', {}, formatNumber(c.updated ?? 0)), ' updated'),
      h('span', { title: 'unchanged products' }, h('b', {}, formatNumber(c.unchanged ?? 0)), ' unchanged'),
      h('span', { title: 'deleted products' }, h('b', {}, formatNumber(c.deleted ?? 0)), ' deleted'),
      h('span', { class: failedCount ? 'fail' : '', title: 'failed lines' }, h('b', {}, formatNumber(failedCount)), ' failed'),
      h('span', { class: warnCount ? 'warn' : '', title: 'products indexed without something (an image that could not be loaded)', 'data-testid': 'job-warnings' }, h('b', {}, formatNumber(warnCount)), ` warning${warnCount === 1 ? '' : 's'}`))),
    h('td', { class: 'job-actions' }, (failedCount > 0 || warnCount > 0) && !ACTIVE.has(j.state)
      ? h('button', {
        type: 'button', class: 'btn btn-sm', 'data-testid': 'report-view', 'aria-expanded': String(openReport === j.id),
        onclick: () => toggleReport(j), 'aria-label': `Show the failures and warnings of job ${j.id}`,
      }, openReport === j.id ? 'Hide report' : `View ${formatNumber(failedCount + warnCount)} problem${failedCount + warnCount === 1 ? '' : 's'}`)
      : null,
      j.failures_url && (failedCount > 0 || !ACTIVE.has(j.state))
      ? h('button', {
        type: 'button', class: `btn btn-sm${failedCount ? '' : ' btn-ghost'}`, 'data-testid': 'failures-download',
        onclick: (e) => downloadFailures(j, e.currentTarget),
        title: 'Download the failure report (JSONL: line, id, reason; may include warnings)',
        'aria-label': `Download the failure report of job ${j.id}`,
      }, icon('download'), 'JSONL')
      : h('span', { class: 'muted' }, '—')),
  );
}

/** The job whose report table is open, and the page shown. */
let openReport = null;
let reportOffset = 0;
const REPORT_PAGE = 50;

function toggleReport(j) {
  openReport = openReport === j.id ? null : j.id;
  reportOffset = 0;
  renderJobs(lastJobs);
}

/** A row under a job holding its failures and warnings: line, id, reason, a page at a time. */
function reportRow(j) {
  const cell = h('td', { colspan: 7 }, h('div', { class: 'muted' }, 'Loading the report…'));
  const load = async () => {
    try {
      const page = await adminApi(`/v1/jobs/${encodeURIComponent(j.id)}/report?offset=${reportOffset}&limit=${REPORT_PAGE}`);
      const items = page.items || [];
      const last = Math.min(page.total, reportOffset + items.length);
      fill(cell,
        h('div', { class: 'report-head' },
          h('strong', {}, `${formatNumber(page.errors)} failed · ${formatNumber(page.warnings)} warning${page.warnings === 1 ? '' : 's'}`),
          h('span', { class: 'muted' }, page.total ? ` · lines ${formatNumber(reportOffset + 1)}–${formatNumber(last)} of ${formatNumber(page.total)}` : '')),
        h('div', { class: 'table-wrap report-wrap' }, h('table', { class: 'data report', 'data-testid': 'job-report' },
          h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, ''), h('th', { scope: 'col', class: 'num' }, 'Line'), h('th', { scope: 'col' }, 'Id'), h('th', { scope: 'col' }, 'Reason'))),
          h('tbody', {}, items.map((f) => h('tr', { 'data-testid': 'report-row', 'data-severity': f.severity },
            h('td', {}, h('span', { class: `badge badge-${f.severity === 'error' ? 'failed' : 'warning'}` }, f.severity === 'error' ? 'failed' : 'warning')),
            h('td', { class: 'num' }, f.line ?? '—'),
            h('td', { class: 'mono' }, f.id ?? '—'),
            h('td', { class: 'reason' }, f.reason)))))),
        page.total > REPORT_PAGE ? h('div', { class: 'row', style: { gap: '8px', marginTop: '6px' } },
          h('button', { type: 'button', class: 'btn btn-sm', disabled: reportOffset === 0, onclick: () => { reportOffset = Math.max(0, reportOffset - REPORT_PAGE); load(); } }, 'Previous'),
          h('button', { type: 'button', class: 'btn btn-sm', disabled: last >= page.total, onclick: () => { reportOffset += REPORT_PAGE; load(); } }, 'Next')) : null);
    } catch (err) {
      fill(cell, h('div', { class: 'alert alert-error', role: 'alert' }, `Could not load the report: ${err.message}`));
    }
  };
  load();
  return h('tr', { class: 'report-row-wrap', 'data-testid': 'job-report-row' }, cell);
}

/** The report needs the Authorization header, so fetch it and save it through a Blob URL. */
async function downloadFailures(job, btn) {
  btn.disabled = true;
  try {
    const res = await adminApi(job.failures_url, { raw: true, headers: { Accept: 'application/x-ndjson, application/json, */*' } });
    const blob = await res.blob();
    const url = URL.createObjectURL(blob);
    const a = h('a', { href: url, download: `${job.id}-failures.jsonl`, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (err) {
    if (adminKey) showMessage($('ingest-message'), 'error', `Could not download the failure report: ${err.message}`);
  } finally {
    btn.disabled = false;
  }
}

// ======================================================================
// Products
// ======================================================================

const PAGE = 20;
const productsState = { q: '', offset: 0, total: 0, loaded: false, items: [], selected: null, seq: 0 };

async function loadProducts() {
  const seq = ++productsState.seq;
  const body = $('products-body');
  productsState.loaded = true;
  if (!body.children.length) {
    fill(body, h('tr', { class: 'empty-row' }, h('td', { colspan: 6 }, h('span', { class: 'spinner', style: { display: 'inline-block', verticalAlign: 'middle', marginRight: '8px' } }), 'Loading products…')));
  }
  const qs = new URLSearchParams({ offset: String(productsState.offset), limit: String(PAGE) });
  if (productsState.q) qs.set('q', productsState.q);
  try {
    const res = await adminApi(`/v1/products?${qs}`);
    if (seq !== productsState.seq) return;
    productsState.items = Array.isArray(res?.products) ? res.products : [];
    productsState.total = Number.isFinite(res?.total) ? res.total : productsState.items.length;
    if (productsState.offset > 0 && productsState.items.length === 0 && productsState.total > 0) {
      productsState.offset = Math.max(0, Math.floor((productsState.total - 1) / PAGE) * PAGE);
      loadProducts();
      return;
    }
    renderProducts();
  } catch (err) {
    if (seq !== productsState.seq || !adminKey) return;
    fill(body, h('tr', { class: 'empty-row' }, h('td', { colspan: 6 }, h('span', { style: { color: 'var(--danger)' } }, `Could not load products: ${err.message}`))));
  }
}

function renderProducts() {
  const { items, total, offset } = productsState;
  const body = $('products-body');
  if (!items.length) {
    fill(body, h('tr', { class: 'empty-row' }, h('td', { colspan: 6 }, productsState.q ? `No products match “${productsState.q}”.` : 'The catalog is empty. Import one in the Ingest tab.')));
  } else {
    fill(body, ...items.map((p) => {
      const thumb = (p.thumb_urls && p.thumb_urls[0]) || p.thumb_url || (p.image_urls && p.image_urls[0]);
      const row = h('tr', {
        class: `clickable${productsState.selected === p.id ? ' selected' : ''}`, tabindex: '0',
        'data-testid': 'product-row', 'data-id': p.id, 'aria-label': `Edit ${p.title || p.id}`,
        onclick: () => openEditor(p.id),
        onkeydown: (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); openEditor(p.id); } },
      },
      h('td', {}, imgOrPlaceholder(thumb, '', { class: 'thumb', width: 44, height: 44 })),
      h('td', { class: 'mono' }, p.id),
      h('td', {}, p.title || h('span', { class: 'muted' }, '(untitled)')),
      h('td', {}, p.brand || ''),
      h('td', {}, p.category ? h('span', { class: 'badge' }, p.category) : ''),
      h('td', { class: 'num' }, formatPrice(p.price, p.currency)));
      const ph = row.querySelector('.placeholder-img');
      if (ph) ph.classList.add('thumb');
      return row;
    }));
  }
  $('products-count').textContent = `${formatNumber(total)} product${total === 1 ? '' : 's'}`;
  $('products-range').textContent = total ? `${formatNumber(offset + 1)}–${formatNumber(Math.min(offset + items.length, total))} of ${formatNumber(total)}` : '';
  $('products-prev').disabled = offset === 0;
  $('products-next').disabled = offset + items.length >= total;
}

$('products-search').addEventListener('input', debounce(() => {
  productsState.q = $('products-search').value.trim();
  productsState.offset = 0;
  loadProducts();
}, 250));
$('products-search').addEventListener('keydown', (e) => {
  if (e.key === 'Enter') {
    e.preventDefault();
    productsState.q = $('products-search').value.trim();
    productsState.offset = 0;
    loadProducts();
  }
});
$('products-prev').addEventListener('click', () => {
  productsState.offset = Math.max(0, productsState.offset - PAGE);
  loadProducts();
});
$('products-next').addEventListener('click', () => {
  productsState.offset += PAGE;
  loadProducts();
});

function productMessage(kind, text) {
  const el = $('products-message');
  if (!text) { el.hidden = true; return; }
  showMessage(el, kind, text);
}

let editorSeq = 0;
async function openEditor(id) {
  const seq = ++editorSeq;
  productsState.selected = id;
  for (const r of $('products-body').querySelectorAll('tr[data-id]')) r.classList.toggle('selected', r.dataset.id === id);
  const ed = $('product-editor');
  ed.hidden = false;
  $('products-layout').classList.add('editing');
  fill(ed, h('div', { class: 'muted', style: { display: 'flex', gap: '8px', alignItems: 'center' } }, h('span', { class: 'spinner' }), `Loading ${id}…`));
  try {
    const p = await adminApi(`/v1/products/${encodeURIComponent(id)}`);
    if (seq !== editorSeq) return;
    renderEditor(p);
  } catch (err) {
    if (seq !== editorSeq || !adminKey) return;
    fill(ed, 
      editorHead(id),
      h('div', { class: 'alert alert-error', role: 'alert' }, `Could not load ${id}: ${err.message}`));
  }
}

function closeEditor() {
  editorSeq++;
  productsState.selected = null;
  const ed = $('product-editor');
  ed.hidden = true;
  ed.replaceChildren();
  $('products-layout').classList.remove('editing');
  for (const r of $('products-body').querySelectorAll('tr.selected')) r.classList.remove('selected');
}

function editorHead(id) {
  return h('div', { class: 'editor-head' },
    h('div', {}, h('h3', { id: 'editor-title' }, 'Edit product'), h('span', { class: 'mono muted', style: { fontSize: '12.5px' } }, id)),
    h('button', { type: 'button', class: 'btn btn-ghost btn-icon', 'aria-label': 'Close editor', onclick: closeEditor }, icon('close')));
}

function attrsToText(attrs) {
  if (!attrs || typeof attrs !== 'object') return '';
  return Object.entries(attrs).map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(', ') : v}`).join('\n');
}

function textToAttrs(text, original = {}) {
  const out = {};
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (!line) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) throw new Error(`Attributes line ${i + 1} (“${line}”) is not key=value.`);
    const k = line.slice(0, eq).trim();
    const v = line.slice(eq + 1).trim();
    out[k] = Array.isArray(original?.[k]) ? v.split(',').map((x) => x.trim()).filter(Boolean) : v;
  }
  return out;
}

function field(id, label, input, cls = '') {
  return h('div', { class: `field ${cls}` }, h('label', { for: id }, label), input);
}

function renderEditor(p) {
  const ed = $('product-editor');
  const images = p.thumb_urls && p.thumb_urls.length ? p.thumb_urls : (p.image_urls || []);
  const full = p.image_urls || images;
  const inp = (name, value, extra = {}) => h('input', {
    id: `edit-${name}`, class: 'input', 'data-testid': `edit-${name}`, value: value ?? '', ...extra,
  });
  const form = h('form', { class: 'form-grid', novalidate: true },
    field('edit-title', 'Title', inp('title', p.title, { required: true }), 'span-2'),
    field('edit-description', 'Description', h('textarea', { id: 'edit-description', class: 'input', 'data-testid': 'edit-description', rows: 4 }, p.description ?? ''), 'span-2'),
    field('edit-brand', 'Brand', inp('brand', p.brand)),
    field('edit-category', 'Category', inp('category', p.category)),
    field('edit-price', 'Price', inp('price', p.price ?? '', { type: 'number', step: 'any', min: '0', inputmode: 'decimal' })),
    field('edit-currency', 'Currency', inp('currency', p.currency, { maxlength: '8', placeholder: 'USD', autocapitalize: 'characters' })),
    h('div', { class: 'field span-2' },
      h('label', { for: 'edit-attributes' }, 'Attributes'),
      h('textarea', { id: 'edit-attributes', class: 'input mono', 'data-testid': 'edit-attributes', rows: 4, placeholder: 'color=red\nmaterial=cotton', 'aria-describedby': 'attr-hint' }, attrsToText(p.attributes)),
      h('span', { class: 'field-hint', id: 'attr-hint' }, 'One key=value per line.')),
  );
  const msg = h('div', { 'data-testid': 'editor-message', hidden: true });
  const saveBtn = h('button', { type: 'submit', class: 'btn btn-primary', 'data-testid': 'save-product' }, 'Save changes');
  const deleteBtn = h('button', { type: 'button', class: 'btn', 'data-testid': 'delete-product', style: { color: 'var(--danger)' } }, 'Delete…');
  const confirmBox = h('div', { class: 'confirm-box', role: 'alertdialog', 'aria-labelledby': 'confirm-text', hidden: true },
    h('span', { id: 'confirm-text' }, h('strong', {}, `Delete ${p.id}?`), ' It disappears from search at once. This cannot be undone.'),
    h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'btn btn-danger btn-sm', 'data-testid': 'confirm-delete', onclick: () => doDelete(p, msg) }, 'Yes, delete'),
      h('button', {
        type: 'button', class: 'btn btn-sm', 'data-testid': 'cancel-delete',
        onclick: () => { confirmBox.hidden = true; deleteBtn.hidden = false; deleteBtn.focus(); },
      }, 'Cancel')));
  deleteBtn.addEventListener('click', () => {
    confirmBox.hidden = false;
    deleteBtn.hidden = true;
    confirmBox.querySelector('[data-testid="cancel-delete"]').focus();
  });
  form.append(h('div', { class: 'span-2 editor-actions' }, saveBtn, deleteBtn), h('div', { class: 'span-2' }, confirmBox), h('div', { class: 'span-2' }, msg));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    doSave(p, form, msg, saveBtn);
  });

  fill(ed, 
    editorHead(p.id),
    images.length ? h('div', { class: 'editor-images', role: 'list', 'aria-label': 'Product images' },
      images.map((src, i) => h('a', { role: 'listitem', href: full[i] || src, target: '_blank', rel: 'noopener', title: (p.images && p.images[i]) || `Image ${i + 1}` },
        imgOrPlaceholder(src, `${p.title || p.id}, image ${i + 1}`)))) : h('p', { class: 'muted' }, 'No images.'),
    imageProblems(p),
    imageUpload(p),
    p.url ? h('div', { style: { fontSize: '13px' } }, 'Product page: ', /^https?:\/\//i.test(p.url) ? h('a', { href: p.url, target: '_blank', rel: 'noopener noreferrer' }, p.url) : p.url) : null,
    form,
  );
  if (window.innerWidth <= 1000) ed.scrollIntoView({ block: 'nearest' });
}

/** The product's image problems (what could not be loaded at its last write), in words. */
function imageProblems(p) {
  const errs = [...(p.image_errors || []), ...(p.warnings || [])];
  if (!errs.length) return null;
  return h('div', { class: 'alert alert-warning', role: 'status', 'data-testid': 'image-problems' },
    h('strong', {}, `${errs.length} image problem${errs.length === 1 ? '' : 's'}`),
    h('ul', { class: 'image-problems' }, errs.map((e) => h('li', {}, e))));
}

/** Upload images for a product: add them, or replace the ones it has. */
function imageUpload(p) {
  const input = h('input', { type: 'file', accept: 'image/jpeg,image/png,image/webp,image/gif', multiple: true, id: 'edit-images', class: 'input', 'data-testid': 'edit-images' });
  const replace = h('input', { type: 'checkbox', id: 'edit-images-replace', 'data-testid': 'edit-images-replace' });
  const msg = h('div', { 'data-testid': 'image-upload-message', hidden: true });
  const btn = h('button', { type: 'button', class: 'btn btn-sm', 'data-testid': 'upload-images' }, icon('upload'), 'Upload images');
  btn.addEventListener('click', async () => {
    const files = Array.from(input.files || []);
    if (!files.length) {
      showMessage(msg, 'error', 'Choose one or more image files first.');
      input.focus();
      return;
    }
    const fd = new FormData();
    for (const f of files) fd.append('image', f, f.name);
    btn.disabled = true;
    showMessage(msg, 'info', `Uploading ${files.length} image${files.length === 1 ? '' : 's'}…`, true);
    try {
      const res = await adminApi(`/v1/products/${encodeURIComponent(p.id)}/images${replace.checked ? '?replace=true' : ''}`, { method: 'POST', body: fd });
      renderEditor(res);
      const warnings = res.warnings || [];
      const after = $('image-upload-message-after');
      if (after) showMessage(after, warnings.length ? 'warning' : 'success', warnings.length ? `Saved, but ${warnings.length} image${warnings.length === 1 ? ' was' : 's were'} not used (see above).` : 'Images saved. The product is searchable with them now.');
      announce('Images saved');
    } catch (err) {
      if (adminKey) showMessage(msg, 'error', `Upload failed: ${err.message}`);
    } finally {
      btn.disabled = false;
    }
  });
  return h('div', { class: 'image-upload', 'data-testid': 'image-upload' },
    h('label', { for: 'edit-images' }, 'Add or replace images'),
    h('div', { class: 'row', style: { gap: '8px', alignItems: 'center', flexWrap: 'wrap' } },
      input,
      h('label', { class: 'checkbox', for: 'edit-images-replace' }, replace, 'Replace the current images'),
      btn),
    msg,
    h('div', { id: 'image-upload-message-after', 'data-testid': 'image-upload-result', hidden: true }));
}

async function doSave(original, form, msg, btn) {
  const v = (id) => form.querySelector(`#edit-${id}`).value;
  let attributes;
  try {
    attributes = textToAttrs(v('attributes'), original.attributes);
  } catch (err) {
    showMessage(msg, 'error', err.message);
    return;
  }
  const title = v('title').trim();
  if (!title) {
    showMessage(msg, 'error', 'The title must not be empty.');
    form.querySelector('#edit-title').focus();
    return;
  }
  const priceText = v('price').trim();
  const price = priceText === '' ? null : Number(priceText);
  if (price !== null && (!Number.isFinite(price) || price < 0)) {
    showMessage(msg, 'error', 'The price must be a non-negative number.');
    return;
  }
  // Send the product back as stored (images, url, …) with the edited fields; drop server-made URLs.
  const {
    image_urls: _iu, thumb_urls: _tu, thumb_url: _t, image_url: _i,
    image_errors: _ie, indexed_images: _ii, updated_at: _ua, ...rest
  } = original;
  const body = {
    ...rest,
    id: original.id,
    title,
    description: v('description'),
    brand: v('brand').trim(),
    category: v('category').trim(),
    price,
    currency: v('currency').trim().toUpperCase(),
    attributes,
  };
  btn.disabled = true;
  showMessage(msg, 'info', 'Saving and re-embedding…', true);
  try {
    const saved = await adminApi(`/v1/products/${encodeURIComponent(original.id)}`, { method: 'PUT', json: body });
    if (saved && saved.id) renderEditor(saved);
    const m = $('product-editor').querySelector('[data-testid="editor-message"]');
    showMessage(m, 'success', `Saved ${original.id}.`);
    announce(`Saved ${original.id}`);
    loadProducts();
  } catch (err) {
    if (adminKey) showMessage(msg, 'error', `Could not save: ${err.message}`);
  } finally {
    btn.disabled = false;
  }
}

async function doDelete(p, msg) {
  showMessage(msg, 'info', `Deleting ${p.id}…`, true);
  try {
    await adminApi(`/v1/products/${encodeURIComponent(p.id)}`, { method: 'DELETE' });
    closeEditor();
    productMessage('success', `Deleted ${p.id}.`);
    announce(`Deleted ${p.id}`);
    loadProducts();
  } catch (err) {
    if (adminKey) showMessage(msg, 'error', `Could not delete: ${err.message}`);
  }
}

// ======================================================================
// Search playground
// ======================================================================

const CHANNELS = ['image', 'text', 'keyword'];
const pg = { photo: null, photoUrl: null, seq: 0 };
const panels = {};

function fusionPanel(name, defaults) {
  const id = (x) => `pg-${name}-${x}`;
  const modeSeg = h('div', { class: 'seg', role: 'radiogroup', 'aria-label': `Mode for ${name.toUpperCase()}` },
    ['rrf', 'weighted'].map((m) => h('label', {},
      h('input', { type: 'radio', name: id('mode'), value: m, checked: defaults.mode === m, 'data-testid': `playground-${name}-mode-${m}` }),
      h('span', {}, m === 'rrf' ? 'RRF' : 'Weighted'))));
  const kInput = h('input', { id: id('k'), class: 'input', type: 'number', min: '1', step: '1', value: String(defaults.k), 'data-testid': `playground-${name}-k` });
  const norm = h('select', { id: id('norm'), class: 'input', 'data-testid': `playground-${name}-normalization` },
    h('option', { value: 'minmax', selected: defaults.normalization === 'minmax' }, 'Min-max'),
    h('option', { value: 'zscore', selected: defaults.normalization === 'zscore' }, 'Z-score'));
  const weights = {};
  const weightRows = CHANNELS.map((ch) => {
    const range = h('input', { type: 'range', min: '0', max: '3', step: '0.05', value: String(defaults.weights[ch]), id: id(`w-${ch}`), 'data-testid': `playground-${name}-weight-${ch}-range` });
    const num = h('input', { type: 'number', class: 'input', min: '0', step: '0.05', value: String(defaults.weights[ch]), 'aria-label': `${ch} weight for ${name.toUpperCase()} (number)`, 'data-testid': `playground-${name}-weight-${ch}` });
    range.addEventListener('input', () => { num.value = range.value; });
    num.addEventListener('input', () => { if (num.value !== '') range.value = num.value; });
    weights[ch] = num;
    return h('div', { class: 'weight-row' }, h('label', { for: id(`w-${ch}`) }, ch), range, num);
  });
  const kField = field(id('k'), 'RRF k', kInput);
  const normField = field(id('norm'), 'Normalization', norm);
  const update = () => {
    const mode = panel.querySelector(`input[name="${id('mode')}"]:checked`).value;
    kInput.disabled = mode !== 'rrf';
    norm.disabled = mode !== 'weighted';
    kField.style.opacity = mode === 'rrf' ? '' : '0.5';
    normField.style.opacity = mode === 'weighted' ? '' : '0.5';
  };
  const other = name === 'a' ? 'b' : 'a';
  const copyBtn = h('button', {
    type: 'button', class: 'btn btn-ghost btn-sm', onclick: () => copyPanel(other, name),
    title: `Copy settings ${other.toUpperCase()} into ${name.toUpperCase()}`,
  }, `Copy from ${other.toUpperCase()}`);
  const panel = h('div', {
    class: `card-box fusion-panel ${name}`, role: 'group', 'aria-labelledby': id('title'), 'data-testid': `playground-settings-${name}`,
  },
  h('div', { class: 'section-head', style: { marginBottom: '10px' } },
    h('h3', { id: id('title'), style: { margin: 0 } }, `Settings ${name.toUpperCase()}`), copyBtn),
  h('div', { class: 'fusion-grid' },
    h('div', { class: 'field' }, h('span', { class: 'field-label' }, 'Mode'), modeSeg),
    h('div', {}),
    kField,
    normField,
    h('div', { class: 'weights' }, h('span', { class: 'field-label' }, 'Weights'), weightRows)));
  panel.addEventListener('change', update);
  panels[name] = {
    el: panel,
    update,
    read() {
      const mode = panel.querySelector(`input[name="${id('mode')}"]:checked`).value;
      const w = {};
      for (const ch of CHANNELS) {
        const n = Number(weights[ch].value);
        w[ch] = Number.isFinite(n) && n >= 0 ? n : 0;
      }
      const k = Math.max(1, Math.round(Number(kInput.value) || 60));
      return { mode, k, weights: w, normalization: norm.value };
    },
    write(f) {
      panel.querySelector(`input[name="${id('mode')}"][value="${f.mode}"]`).checked = true;
      kInput.value = String(f.k);
      norm.value = f.normalization;
      for (const ch of CHANNELS) {
        weights[ch].value = String(f.weights[ch]);
        panel.querySelector(`#${id(`w-${ch}`)}`).value = String(f.weights[ch]);
      }
      update();
    },
  };
  setTimeout(update);
  return panel;
}

function copyPanel(from, to) {
  panels[to].write(panels[from].read());
}

$('pg-settings').append(
  fusionPanel('a', { mode: 'rrf', k: 60, weights: { image: 1, text: 1, keyword: 1 }, normalization: 'minmax' }),
  fusionPanel('b', { mode: 'weighted', k: 60, weights: { image: 1, text: 1, keyword: 0.5 }, normalization: 'minmax' }),
);

$('pg-photo').addEventListener('change', () => {
  const f = $('pg-photo').files && $('pg-photo').files[0];
  if (!f) return;
  if (!isImageFile(f)) {
    $('pg-error').textContent = 'That file is not an image.';
    $('pg-error').hidden = false;
    return;
  }
  if (pg.photoUrl) URL.revokeObjectURL(pg.photoUrl);
  pg.photo = f;
  pg.photoUrl = URL.createObjectURL(f);
  $('pg-photo-preview').src = pg.photoUrl;
  $('pg-photo-preview').hidden = false;
  $('pg-photo-clear').hidden = false;
  $('pg-photo-text').textContent = 'Change photo';
});
$('pg-photo-clear').addEventListener('click', () => {
  if (pg.photoUrl) URL.revokeObjectURL(pg.photoUrl);
  pg.photo = null;
  pg.photoUrl = null;
  $('pg-photo').value = '';
  $('pg-photo-preview').hidden = true;
  $('pg-photo-preview').removeAttribute('src');
  $('pg-photo-clear').hidden = true;
  $('pg-photo-text').textContent = 'Add photo';
});

async function pgSearch(q, k, fusion, image) {
  if (image) {
    const fd = new FormData();
    fd.append('image', image, image.name || 'photo.jpg');
    if (q) fd.append('q', q);
    fd.append('k', String(k));
    fd.append('fusion', JSON.stringify(fusion));
    return adminApi('/v1/search/image', { method: 'POST', body: fd });
  }
  return adminApi('/v1/search/text', { method: 'POST', json: { q, k, fusion } });
}

$('pg-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const q = $('pg-q').value.trim();
  const k = Number($('pg-k').value) || 10;
  const err = $('pg-error');
  err.hidden = true;
  if (!q && !pg.photo) {
    err.textContent = 'Enter query text, add a photo, or both.';
    err.hidden = false;
    $('pg-q').focus();
    return;
  }
  const seq = ++pg.seq;
  const fa = panels.a.read();
  const fb = panels.b.read();
  const btn = $('pg-run');
  btn.disabled = true;
  $('pg-results').hidden = false;
  for (const [col, f, name] of [[$('pg-a'), fa, 'A'], [$('pg-b'), fb, 'B']]) {
    fill(col, colHead(name, f), h('div', { class: 'muted', style: { display: 'flex', gap: '8px', alignItems: 'center' } }, h('span', { class: 'spinner' }), 'Searching…'));
    col.setAttribute('aria-busy', 'true');
  }
  try {
    const image = pg.photo ? await prepareImage(pg.photo) : null;
    const [ra, rb] = await Promise.allSettled([pgSearch(q, k, fa, image), pgSearch(q, k, fb, image)]);
    if (seq !== pg.seq) return;
    const hitsA = ra.status === 'fulfilled' ? (ra.value?.hits || []) : null;
    const hitsB = rb.status === 'fulfilled' ? (rb.value?.hits || []) : null;
    const rankA = new Map((hitsA || []).map((x, i) => [x.id, i + 1]));
    const rankB = new Map((hitsB || []).map((x, i) => [x.id, i + 1]));
    renderPgColumn($('pg-a'), 'A', fa, ra, rankB);
    renderPgColumn($('pg-b'), 'B', fb, rb, rankA);
    if (hitsA && hitsB) {
      const moved = (hitsA || []).filter((x, i) => rankB.get(x.id) !== i + 1).length;
      announce(`A: ${hitsA.length} hits, B: ${hitsB.length} hits, ${moved} ranked differently`);
    }
  } catch (ex) {
    if (adminKey) { err.textContent = ex.message; err.hidden = false; }
  } finally {
    if (seq === pg.seq) btn.disabled = false;
  }
});

function describeFusion(f) {
  const w = CHANNELS.map((c) => `${c[0]}${f.weights[c]}`).join(' ');
  return f.mode === 'rrf' ? `RRF k=${f.k} · ${w}` : `Weighted ${f.normalization} · ${w}`;
}

function colHead(name, f, extra = '') {
  return h('h3', {}, h('span', { class: 'tag', 'aria-hidden': 'true' }, name),
    h('span', {}, `Settings ${name}`, h('span', { class: 'muted', style: { fontWeight: 400, fontSize: '12.5px', marginLeft: '8px' } }, describeFusion(f), extra)));
}

function fmtScore(x) {
  if (!Number.isFinite(x)) return '—';
  const a = Math.abs(x);
  return a !== 0 && a < 0.01 ? x.toExponential(2) : x.toFixed(a < 1 ? 4 : 3);
}

function renderPgColumn(col, name, f, result, otherRanks) {
  col.removeAttribute('aria-busy');
  if (result.status !== 'fulfilled') {
    fill(col, colHead(name, f), h('div', { class: 'alert alert-error', role: 'alert', 'data-testid': 'error' }, result.reason?.message || 'Search failed'));
    return;
  }
  const res = result.value || {};
  const hits = res.hits || [];
  const took = Number.isFinite(res.took_ms) ? ` · ${formatMs(res.took_ms)}` : '';
  const list = h('ol', { class: 'hit-list' }, hits.map((hit, i) => {
    const rank = i + 1;
    const other = otherRanks.get(hit.id);
    const moved = other !== rank;
    let delta = null;
    if (other === undefined) delta = h('span', { class: 'delta new', title: `Not in the other column's top ${otherRanks.size}` }, `Only in this column (not in the other's top ${otherRanks.size})`);
    else if (moved) {
      const d = other - rank; // positive: this setting ranks it higher than the other
      const n = Math.abs(d);
      const words = `${d > 0 ? 'Up' : 'Down'} ${n} place${n === 1 ? '' : 's'}: #${other} in the other column`;
      delta = h('span', { class: `delta ${d > 0 ? 'up' : 'down'}`, title: `This setting ranks it #${rank}; the other ranks it #${other}` }, words);
    }
    const ex = hit.explain || {};
    const chans = CHANNELS.map((c) => {
      const v = ex[c];
      return v ? h('span', { class: 'ch', title: `${c}: rank ${v.rank}, score ${v.score}` }, `${c} #${v.rank} · ${fmtScore(v.score)}`)
        : h('span', { class: 'ch none', title: `${c}: did not return this product` }, `${c} —`);
    });
    const fused = ex.fused ?? hit.score;
    return h('li', {
      class: `hit${moved ? ' moved' : ''}`, 'data-testid': 'playground-hit', 'data-id': hit.id, 'data-rank': String(rank),
      'data-moved': String(moved),
    },
    h('span', { class: 'rank', 'aria-label': `Rank ${rank}` }, String(rank)),
    imgOrPlaceholder(hit.thumb_url, ''),
    h('div', { style: { minWidth: 0 } },
      h('div', { class: 'title', title: hit.title }, hit.title || hit.id),
      h('div', {}, h('span', { class: 'id' }, hit.id), delta),
      h('div', { class: 'explain' }, chans, h('span', { class: 'ch fused' }, `fused ${fmtScore(fused)}`))));
  }));
  fill(col, 
    colHead(name, f, ` · ${formatNumber(res.total ?? hits.length)} total${took}`),
    hits.length ? list : h('p', { class: 'muted' }, 'No results.'));
}

// ======================================================================
// Health
// ======================================================================

async function refreshHealth() {
  clearTimeout(timers.health);
  try {
    const data = await adminApi('/v1/admin/health');
    if (currentTab === 'health') renderHealth(data);
    $('health-error').hidden = true;
    $('health-updated').textContent = `Updated ${new Date().toLocaleTimeString()} · refreshes every 2 s`;
  } catch (err) {
    if (!adminKey) return;
    $('health-error').textContent = `Could not load health: ${err.message}`;
    $('health-error').hidden = false;
  }
  if (adminKey && currentTab === 'health') timers.health = setTimeout(refreshHealth, 2000);
}

/** Bucket counts per bucket. Prometheus-style cumulative counts (`le`) are turned into per-bucket counts. */
function bucketCounts(route) {
  const le = (v) => (v === null || v === undefined || v === '' || !Number.isFinite(Number(v)) ? Infinity : Number(v));
  const b = (route.buckets || []).map((x) => ({ le: le(x.le_ms), count: Number(x.count) || 0 }));
  b.sort((x, y) => (x.le === y.le ? 0 : x.le - y.le));
  const sum = b.reduce((a, x) => a + x.count, 0);
  const monotonic = b.every((x, i) => i === 0 || x.count >= b[i - 1].count);
  const last = b.length ? b[b.length - 1].count : 0;
  const total = Number(route.count) || 0;
  const cumulative = b.length > 1 && monotonic && (last === total || sum > total);
  if (cumulative) return b.map((x, i) => ({ le: x.le, count: x.count - (i ? b[i - 1].count : 0) }));
  return b;
}

function leLabel(le) {
  if (le === null || le === undefined || le === '' || !Number.isFinite(Number(le))) return '+∞';
  const v = Number(le);
  return v >= 1000 ? `${v / 1000}s` : `${v}`;
}

function histogram(route) {
  const buckets = bucketCounts(route);
  const W = 340;
  const H = 130;
  const padL = 28;
  const padB = 22;
  const padT = 8;
  const max = Math.max(1, ...buckets.map((b) => b.count));
  const n = Math.max(1, buckets.length);
  const bw = (W - padL) / n;
  const y = (c) => padT + (H - padT - padB) * (1 - c / max);
  const svg = s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `Latency histogram for ${route.route}` });
  svg.append(s('title', {}, `Latency histogram for ${route.route} (milliseconds)`));
  const ticks = [...new Set([0, Math.round(max / 2), max])].filter((t) => t === 0 || t === max || max >= 2);
  for (const t of ticks) {
    const yy = y(t);
    svg.append(s('line', { class: t === 0 ? 'axis' : 'grid-line', x1: padL, x2: W, y1: yy, y2: yy }));
    svg.append(s('text', { x: padL - 4, y: yy + 3, 'text-anchor': 'end' }, formatCompact(t)));
  }
  buckets.forEach((b, i) => {
    const x = padL + i * bw + bw * 0.12;
    const top = y(b.count);
    const hgt = Math.max(b.count > 0 ? 1.5 : 0, H - padB - top);
    const prev = i ? leLabel(buckets[i - 1].le) : '0';
    svg.append(s('rect', { class: 'bar', x, y: H - padB - hgt, width: bw * 0.76, height: hgt, rx: 2 },
      s('title', {}, `${prev}–${leLabel(b.le)} ms: ${b.count} request${b.count === 1 ? '' : 's'}`)));
    if (n <= 8 || i % 2 === 0 || i === n - 1) {
      const lbl = Number.isFinite(b.le) ? `≤${leLabel(b.le)}` : `>${i ? leLabel(buckets[i - 1].le) : '0'}`;
      svg.append(s('text', { x: padL + i * bw + bw / 2, y: H - 8, 'text-anchor': 'middle' }, lbl));
    }
  });
  return svg;
}

function formatCompact(v) {
  if (v >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)}k`;
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

function sparkline(values) {
  const W = 600;
  const H = 90;
  const pad = 4;
  const vals = values.map((v) => Number(v) || 0);
  const max = Math.max(1, ...vals);
  const n = vals.length;
  const x = (i) => (n <= 1 ? W / 2 : pad + (i * (W - 2 * pad)) / (n - 1));
  const y = (v) => H - pad - ((H - 2 * pad) * v) / max;
  const pts = vals.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
  const svg = s('svg', {
    class: 'chart', viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img', style: 'height:90px',
    'aria-label': `Queries per second over the last ${n} seconds, peak ${formatCompact(max)}`, 'data-testid': 'qps-sparkline',
  });
  svg.append(s('line', { class: 'grid-line', x1: 0, x2: W, y1: y(max), y2: y(max) }));
  if (n) {
    svg.append(s('polygon', { class: 'spark-area', points: `${x(0)},${H - pad} ${pts} ${x(n - 1)},${H - pad}` }));
    svg.append(s('polyline', { class: 'spark-line', points: pts, 'vector-effect': 'non-scaling-stroke' }));
  }
  return svg;
}

function renderHealth(data) {
  const root = $('health');
  const qps = Array.isArray(data?.qps) ? data.qps : [];
  const current = qps.length ? Number(qps[qps.length - 1]) || 0 : 0;
  const avg = qps.length ? qps.reduce((a, v) => a + (Number(v) || 0), 0) / qps.length : 0;
  const peak = qps.length ? Math.max(...qps.map((v) => Number(v) || 0)) : 0;
  const q = data?.queue || {};
  const depth = Number(q.depth) || 0;
  const cap = Number(q.capacity) || 0;
  const ratio = cap ? depth / cap : 0;

  // The server orders routes: search first, then the API, then assets folded into one line.
  const routes = (data?.routes || []).slice();
  const status = data?.status || [];
  const errors = data?.errors || [];
  const stages = data?.stages || [];
  const sum = (group, pred) => status.filter((c) => c.group === group && pred(c.status)).reduce((a, c) => a + (c.count || 0), 0);
  const searchOk = sum('search', (s) => s < 400);
  const search4 = sum('search', (s) => s >= 400 && s < 500);
  const search5 = sum('search', (s) => s >= 500);
  const searchTotal = searchOk + search4 + search5;
  fill(root, 
    h('div', { class: 'card-box', style: { margin: '0 0 14px' }, 'data-testid': 'search-health' },
      h('h3', {}, 'Search, last 5 minutes'),
      h('div', { class: 'status-summary' },
        h('span', { 'data-testid': 'search-ok' }, h('span', { class: 'big-num' }, formatNumber(searchOk)), h('span', { class: 'muted' }, ' answered')),
        h('span', { class: search4 ? 'warn' : '', 'data-testid': 'search-4xx' }, h('span', { class: 'big-num' }, formatNumber(search4)), h('span', { class: 'muted' }, ' client errors (4xx)')),
        h('span', { class: search5 ? 'fail' : '', 'data-testid': 'search-5xx' }, h('span', { class: 'big-num' }, formatNumber(search5)), h('span', { class: 'muted' }, ' server errors (5xx)')),
        searchTotal ? h('span', { class: 'muted' }, `${((100 * searchOk) / searchTotal).toFixed(1)}% ok`) : null),
      status.length ? h('div', { class: 'table-wrap' }, h('table', { class: 'data compact', 'data-testid': 'status-table' },
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Routes'), h('th', { scope: 'col' }, 'Status'), h('th', { scope: 'col', class: 'num' }, 'Responses'))),
        h('tbody', {}, status.map((c) => h('tr', { 'data-testid': 'status-row', 'data-group': c.group, 'data-status': String(c.status) },
          h('td', {}, c.group === 'assets' ? 'images, thumbnails, UI' : c.group),
          h('td', {}, h('span', { class: `badge ${c.status >= 500 ? 'badge-failed' : c.status >= 400 ? 'badge-warning' : 'badge-done'}` }, String(c.status))),
          h('td', { class: 'num' }, formatNumber(c.count))))))) : h('p', { class: 'muted' }, 'No requests recorded yet.'),
      errors.length ? h('div', { 'data-testid': 'error-codes' }, h('h4', {}, 'Errors by code'),
        h('ul', { class: 'error-codes' }, errors.map((e) => h('li', { 'data-code': e.code }, h('code', {}, e.code), ` × ${formatNumber(e.count)}`)))) : null),
    stages.length ? h('div', { class: 'card-box', style: { margin: '0 0 14px' }, 'data-testid': 'stage-latency' },
      h('h3', {}, 'Search latency by stage'),
      h('div', { class: 'table-wrap' }, h('table', { class: 'data compact' },
        h('thead', {}, h('tr', {}, ...['Stage', 'Count', 'p50', 'p95', 'p99'].map((t, i) => h('th', { scope: 'col', class: i ? 'num' : '' }, t)))),
        h('tbody', {}, stages.map((st) => h('tr', { 'data-stage': st.stage },
          h('td', {}, st.stage), h('td', { class: 'num' }, formatNumber(st.count)),
          h('td', { class: 'num' }, formatMs(st.p50_ms)), h('td', { class: 'num' }, formatMs(st.p95_ms)), h('td', { class: 'num' }, formatMs(st.p99_ms)))))))) : null,
    h('div', { class: 'health-top' },
      h('div', { class: 'card-box', style: { margin: 0 } },
        h('div', { class: 'section-head', style: { marginBottom: '4px' } },
          h('h3', { style: { margin: 0 } }, 'Queries per second'),
          h('span', { class: 'muted', style: { fontSize: '13px' } }, `last ${qps.length} s`)),
        h('div', { style: { display: 'flex', gap: '22px', alignItems: 'baseline', flexWrap: 'wrap' } },
          h('span', {}, h('span', { class: 'big-num', 'data-testid': 'qps-now' }, formatCompact(current)), h('span', { class: 'muted' }, ' now')),
          h('span', { class: 'muted' }, `avg ${avg.toFixed(1)} · peak ${formatCompact(peak)}`)),
        sparkline(qps)),
      h('div', { class: 'card-box', style: { margin: 0 }, 'data-testid': 'queue' },
        h('h3', {}, 'Embedding queue'),
        h('div', {}, h('span', { class: 'big-num', 'data-testid': 'queue-depth' }, formatNumber(depth)), h('span', { class: 'muted' }, ` / ${formatNumber(cap)} capacity`)),
        h('div', {
          class: `meter${ratio >= 0.9 ? ' full' : ratio >= 0.6 ? ' warn' : ''}`, role: 'meter',
          'aria-valuemin': '0', 'aria-valuemax': String(cap), 'aria-valuenow': String(depth), 'aria-label': 'Queue depth',
        }, h('span', { style: { width: `${Math.min(100, ratio * 100)}%` } })),
        h('span', { class: 'muted', style: { fontSize: '13px' } }, cap ? `${Math.round(ratio * 100)}% full` : 'no capacity reported'))),
    h('div', { class: 'section-head' }, h('h2', { style: { fontSize: '16px' } }, 'Latency by route')),
    routes.length
      ? h('div', { class: 'routes' }, routes.map((r) => h('div', { class: `card-box route-card group-${r.group || 'api'}`, style: { margin: 0 }, 'data-testid': 'route-card', 'data-route': r.route, 'data-group': r.group || 'api' },
        h('h3', {}, r.route),
        h('dl', { class: 'quantiles' },
          [['count', formatNumber(r.count)], ['p50', formatMs(r.p50_ms)], ['p95', formatMs(r.p95_ms)], ['p99', formatMs(r.p99_ms)]]
            .map(([k, v]) => h('div', { 'data-q': k }, h('dt', {}, k), h('dd', {}, v)))),
        histogram(r))))
      : h('p', { class: 'muted' }, 'No requests recorded yet.'),
  );
}

// ======================================================================
// Start
// ======================================================================

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && adminKey) {
    if (currentTab === 'overview') refreshOverview();
    if (currentTab === 'health') refreshHealth();
  }
});

const initial = storedKey();
if (initial) {
  $('admin-key').disabled = true;
  $('auth-submit').disabled = true;
  trySignIn(initial);
} else {
  showAuth(null);
}
