// Admin dashboard, Relevance tab: the fusion defaults and relevance floor in force (GET /v1/relevance),
// and a judged set run under two settings A and B (POST /v1/eval) with metrics and per-query wins and losses.
import { api, ApiError, h, fill, formatMs, formatTime, announce } from './common.js';

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = 'vitrine.adminKey';
// The server's limits (web/src/relevance.rs): at most 500 queries and 4 settings per run.
const MAX_QUERIES = 500;
const MAX_FILE_BYTES = 8 * 1024 * 1024;
const METRICS = ['recall@1', 'recall@5', 'recall@10', 'mrr', 'ndcg@10'];
const KINDS = [['text', 'Text query'], ['photo', 'Photo query'], ['photo_text', 'Photo + text']];

function adminKey() {
  try { return sessionStorage.getItem(KEY_STORAGE); } catch { return null; }
}

const panel = $('panel-relevance');
let loaded = false;
let running = null;

// ---------------------------------------------------------------------------------------------
// Defaults in force
// ---------------------------------------------------------------------------------------------

const fmt3 = (v) => (v === null || v === undefined || Number.isNaN(Number(v)) ? '—' : Number(v).toFixed(3));
const pct = (v) => (v === null || v === undefined || Number.isNaN(Number(v)) ? '—' : `${(Number(v) * 100).toFixed(1)}%`);

function floorText(f) {
  if (!f) return '—';
  const parts = [];
  for (const mod of ['text', 'photo']) {
    const c = f[mod] || {};
    const ch = ['image', 'text'].filter((k) => c[k] !== null && c[k] !== undefined).map((k) => `${k} ≥ ${fmt3(c[k])}`);
    parts.push(`${mod} query: ${ch.length ? ch.join(', ') : 'off'}`);
  }
  return parts.join(' · ');
}

function weightsText(w) {
  if (!w) return 'per query kind';
  return `image ${w.image} · text ${w.text} · keyword ${w.keyword}`;
}

const FLOOR_SOURCE = {
  tuned: 'tuned on a judged set (vitrine tune)',
  model_card: 'the model card',
  none: 'none (no floor)',
};

function renderDefaults(r) {
  const box = $('rel-defaults');
  const rows = KINDS.map(([kind, label]) => {
    const f = (r.defaults || {})[kind] || {};
    return h('tr', { dataset: { kind } },
      h('th', { scope: 'row' }, label),
      h('td', {}, f.mode ?? '—'),
      h('td', { class: 'num' }, f.k ?? '—'),
      h('td', {}, weightsText(f.weights)),
      h('td', {}, f.normalization ?? '—'),
      h('td', { class: 'rel-floor' }, f.floor ? floorText(f.floor) : r.floor_source === 'none' ? 'none' : 'index default'));
  });
  const table = h('div', { class: 'table-wrap rel-scroll' },
    h('table', { class: 'data', 'data-testid': 'relevance-defaults' },
      h('thead', {}, h('tr', {},
        h('th', { scope: 'col' }, 'Query kind'), h('th', { scope: 'col' }, 'Mode'), h('th', { scope: 'col', class: 'num' }, 'k'),
        h('th', { scope: 'col' }, 'Weights'), h('th', { scope: 'col' }, 'Normalization'), h('th', { scope: 'col' }, 'Floor (cosine)'))),
      h('tbody', {}, rows)));

  const src = h('p', { class: 'muted', 'data-testid': 'relevance-floor-source' },
    'Floor from: ', FLOOR_SOURCE[r.floor_source] || String(r.floor_source ?? '—'));

  let tuned;
  if (r.tuned) {
    const rep = r.tuned.report || {};
    const b = rep.before || {};
    const a = rep.after || {};
    const line = (label, before, after, fmt) => h('li', {}, `${label}: ${fmt(before)} → ${fmt(after)}`);
    tuned = h('div', { class: 'rel-tuned', 'data-testid': 'relevance-tuned' },
      h('p', {}, `Tuned ${formatTime(r.tuned.tuned_at)} for model ${r.tuned.model?.name ?? r.tuned.model ?? '?'}`,
        rep.test_queries !== undefined ? `, measured on ${rep.test_queries} held-out queries:` : ':'),
      h('ul', {},
        line('nDCG@10', b.fused?.['ndcg@10'], a.fused?.['ndcg@10'], fmt3),
        line('recall@10', b.fused?.['recall@10'], a.fused?.['recall@10'], fmt3),
        line('false-positive rate', b.false_positive_rate, a.false_positive_rate, pct)));
  } else {
    tuned = h('p', { class: 'muted', 'data-testid': 'relevance-tuned' }, 'Not tuned — run ',
      h('code', {}, 'vitrine tune QUERIES.jsonl --data DIR --model DIR'), '.');
  }
  const warn = r.tuned && r.tuned_applies === false
    ? h('div', { class: 'alert alert-error', role: 'alert', 'data-testid': 'relevance-tuned-stale' },
      'The tuned settings were made for another model and are not applied; the defaults above are the built-in ones. Re-run ',
      h('code', {}, 'vitrine tune'), '.')
    : null;
  const c = r.text_cache || {};
  const cache = h('p', { class: 'muted', 'data-testid': 'relevance-cache' },
    `Text-embedding cache: ${pct(c.hit_rate)} hit rate (${c.hits ?? 0} hits, ${c.misses ?? 0} misses, ${c.entries ?? 0} / ${c.capacity ?? 0} entries)`);
  fill(box, table, src, warn, tuned, cache);
}

async function loadDefaults() {
  const key = adminKey();
  if (!key) return;
  const err = $('rel-defaults-error');
  err.hidden = true;
  try {
    renderDefaults(await api('/v1/relevance', { key }));
    loaded = true;
  } catch (e) {
    err.textContent = `Could not load the relevance settings: ${e.message}`;
    err.hidden = false;
  }
}

// ---------------------------------------------------------------------------------------------
// Judged set input
// ---------------------------------------------------------------------------------------------

/**
 * Parses a judged set (JSONL, the `vitrine eval` format) into API queries. Lines with an `image` path
 * are skipped: the server never reads paths, and this page sends only what it was given.
 */
export function parseJudged(text) {
  const queries = [];
  const skipped = [];
  const errors = [];
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    let q;
    try { q = JSON.parse(line); } catch (e) { errors.push(`line ${i + 1}: not JSON (${e.message})`); return; }
    if (!q || typeof q !== 'object' || Array.isArray(q)) { errors.push(`line ${i + 1}: not an object`); return; }
    const id = q.id === undefined ? `line-${i + 1}` : String(q.id);
    if (q.image !== undefined && q.image !== null) { skipped.push(id); return; }
    if (typeof q.q !== 'string' && typeof q.image_base64 !== 'string') { errors.push(`line ${i + 1}: needs "q" (text)`); return; }
    if (!q.relevant || typeof q.relevant !== 'object' || Array.isArray(q.relevant)) { errors.push(`line ${i + 1}: needs "relevant": {sku: grade}`); return; }
    const out = { id, relevant: q.relevant };
    for (const k of ['q', 'image_base64', 'filters', 'fusion']) if (q[k] !== undefined) out[k] = q[k];
    queries.push(out);
  });
  return { queries, skipped, errors };
}

/** "" → null (the service defaults); otherwise a fusion object or an error message. */
function parseFusion(text) {
  const t = text.trim();
  if (!t) return { value: null };
  let v;
  try { v = JSON.parse(t); } catch (e) { return { error: `not JSON: ${e.message}` }; }
  if (!v || typeof v !== 'object' || Array.isArray(v)) return { error: 'must be a JSON object such as {"mode": "rrf", "k": 60}' };
  return { value: v };
}

function settingEditor(name) {
  const id = `rel-fusion-${name.toLowerCase()}`;
  const ta = h('textarea', {
    id, class: 'input rel-json', rows: 4, spellcheck: 'false', 'data-testid': `relevance-fusion-${name.toLowerCase()}`,
    placeholder: 'Empty: the service defaults. Or a fusion, e.g. {"mode": "weighted", "weights": {"image": 1, "text": 1, "keyword": 0.5}}',
    'aria-describedby': `${id}-msg`,
  });
  const msg = h('span', { class: 'field-hint', id: `${id}-msg`, 'aria-live': 'polite' }, 'Service defaults');
  ta.addEventListener('input', () => {
    const r = parseFusion(ta.value);
    msg.textContent = r.error ? `Invalid: ${r.error}` : r.value ? 'Custom fusion' : 'Service defaults';
    msg.classList.toggle('rel-invalid', !!r.error);
    ta.setAttribute('aria-invalid', String(!!r.error));
  });
  return h('div', { class: `field rel-setting rel-${name.toLowerCase()}` }, h('label', { for: id }, `Setting ${name}`), ta, msg);
}

function buildForm() {
  const fileInput = h('input', {
    id: 'rel-file', class: 'input', type: 'file', accept: '.jsonl,.ndjson,.json,application/x-ndjson', 'data-testid': 'relevance-file',
  });
  const ta = h('textarea', {
    id: 'rel-jsonl', class: 'input rel-json', rows: 6, spellcheck: 'false', 'data-testid': 'relevance-jsonl',
    placeholder: '{"id": "q1", "q": "orange astronaut poster", "relevant": {"sku-001": 2}}',
  });
  fileInput.addEventListener('change', async () => {
    const f = fileInput.files?.[0];
    if (!f) return;
    if (f.size > MAX_FILE_BYTES) { showError(`The file is ${Math.round(f.size / 1048576)} MiB; at most 8 MiB is read.`); return; }
    ta.value = await f.text();
    ta.dispatchEvent(new Event('input'));
  });
  const note = h('p', { class: 'field-hint', id: 'rel-set-note', 'data-testid': 'relevance-set-note', 'aria-live': 'polite' });
  ta.addEventListener('input', () => {
    const { queries, skipped, errors } = parseJudged(ta.value);
    const parts = [`${queries.length} quer${queries.length === 1 ? 'y' : 'ies'}`];
    if (skipped.length) parts.push(`${skipped.length} skipped: lines with an "image" path are not sent (the server never reads paths)`);
    if (errors.length) parts.push(`${errors.length} invalid (${errors.slice(0, 3).join('; ')})`);
    note.textContent = ta.value.trim() ? parts.join(' · ') : '';
  });
  const k = h('input', { id: 'rel-k', class: 'input', type: 'number', min: 1, max: 100, value: 10, 'data-testid': 'relevance-k' });
  const run = h('button', { type: 'submit', class: 'btn btn-primary', id: 'rel-run', 'data-testid': 'relevance-run' }, 'Run A and B');
  const form = h('form', { id: 'rel-form', class: 'card-box', novalidate: true },
    h('h3', {}, 'Run a judged set'),
    h('div', { class: 'field' }, h('label', { for: 'rel-file' }, 'Judged set (JSONL)'), fileInput,
      h('span', { class: 'field-hint' }, 'One query a line: {"id", "q", "relevant": {"sku": grade}}. Read in this browser; nothing is uploaded but the queries.')),
    h('div', { class: 'field' }, h('label', { for: 'rel-jsonl' }, 'Or paste JSONL'), ta, note),
    h('div', { class: 'rel-settings' }, settingEditor('A'), settingEditor('B')),
    h('div', { class: 'row rel-run-row' },
      h('div', { class: 'field' }, h('label', { for: 'rel-k' }, 'k (results per query)'), k),
      run));
  form.addEventListener('submit', (e) => { e.preventDefault(); runEval(); });
  return form;
}

function showError(message) {
  const el = $('rel-error');
  el.textContent = message;
  el.hidden = !message;
}

async function runEval() {
  showError('');
  const key = adminKey();
  if (!key) { showError('Not signed in.'); return; }
  const { queries, errors } = parseJudged($('rel-jsonl').value);
  if (errors.length) { showError(`The judged set has ${errors.length} invalid line(s): ${errors.slice(0, 3).join('; ')}`); return; }
  if (!queries.length) { showError('The judged set has no text queries to run.'); return; }
  if (queries.length > MAX_QUERIES) { showError(`${queries.length} queries; at most ${MAX_QUERIES} a run.`); return; }
  const fa = parseFusion($('rel-fusion-a').value);
  const fb = parseFusion($('rel-fusion-b').value);
  if (fa.error || fb.error) { showError(`Setting ${fa.error ? 'A' : 'B'} is ${fa.error || fb.error}`); return; }
  const k = Number($('rel-k').value);
  if (!Number.isInteger(k) || k < 1 || k > 100) { showError('k must be a whole number from 1 to 100.'); return; }

  running?.abort();
  const ctrl = new AbortController();
  running = ctrl;
  const btn = $('rel-run');
  btn.disabled = true;
  btn.textContent = 'Running…';
  $('rel-results').setAttribute('aria-busy', 'true');
  try {
    const res = await api('/v1/eval', { method: 'POST', key, signal: ctrl.signal, json: { queries, k, fusions: [fa.value, fb.value] } });
    renderResults(res.runs, queries);
    loadDefaults(); // the run moved the text-cache counters
    announce('Relevance run finished.');
  } catch (e) {
    if (e.name === 'AbortError') return;
    showError(e instanceof ApiError ? `${e.message} (${e.code})` : `Run failed: ${e.message}`);
  } finally {
    if (running === ctrl) {
      running = null;
      btn.disabled = false;
      btn.textContent = 'Run A and B';
      $('rel-results').setAttribute('aria-busy', 'false');
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

/** Higher is better for every metric except the false-positive rate and latencies. */
function diffCell(a, b, { lowerBetter = false, fmt = fmt3 } = {}) {
  if (a === null || a === undefined || b === null || b === undefined) return h('td', { class: 'num' }, '—');
  const d = Number(b) - Number(a);
  const better = lowerBetter ? d < 0 : d > 0;
  const cls = Math.abs(d) < 1e-9 ? 'rel-same' : better ? 'rel-better' : 'rel-worse';
  return h('td', { class: `num ${cls}` }, `${d > 0 ? '+' : d < 0 ? '−' : '±'}${fmt(Math.abs(d))}`);
}

function metricsTable(A, B) {
  const rows = [];
  const rowsFor = (label, ma, mb, extra) => {
    const cells = [h('th', { scope: 'row' }, label)];
    for (const m of METRICS) {
      cells.push(h('td', { class: 'num', dataset: { metric: m, run: 'a' } }, fmt3(ma?.[m])));
      cells.push(h('td', { class: 'num', dataset: { metric: m, run: 'b' } }, fmt3(mb?.[m])));
      cells.push(diffCell(ma?.[m], mb?.[m]));
    }
    cells.push(...extra);
    return h('tr', { dataset: { row: label } }, cells);
  };
  rows.push(rowsFor('fused', A.fused, B.fused, [
    h('td', { class: 'num', dataset: { metric: 'fpr', run: 'a' } }, pct(A.false_positive_rate)),
    h('td', { class: 'num', dataset: { metric: 'fpr', run: 'b' } }, pct(B.false_positive_rate)),
    diffCell(A.false_positive_rate, B.false_positive_rate, { lowerBetter: true, fmt: pct }),
    h('td', { class: 'num', dataset: { metric: 'p50' } }, `${formatMs(A.latency_ms?.p50)} / ${formatMs(B.latency_ms?.p50)}`),
    h('td', { class: 'num', dataset: { metric: 'p99' } }, `${formatMs(A.latency_ms?.p99)} / ${formatMs(B.latency_ms?.p99)}`),
  ]));
  for (const ch of ['image', 'text', 'keyword']) {
    rows.push(rowsFor(ch, A.channels?.[ch], B.channels?.[ch], [h('td', { colspan: 5, class: 'muted' }, '')]));
  }
  const head1 = [h('th', { scope: 'col', rowspan: 2 }, 'Channel')];
  const head2 = [];
  for (const m of [...METRICS, 'FPR']) {
    head1.push(h('th', { scope: 'colgroup', colspan: 3, class: 'rel-group' }, m === 'mrr' ? 'MRR' : m === 'ndcg@10' ? 'nDCG@10' : m));
    head2.push(h('th', { scope: 'col', class: 'num' }, 'A'), h('th', { scope: 'col', class: 'num' }, 'B'), h('th', { scope: 'col', class: 'num' }, 'B − A'));
  }
  head1.push(h('th', { scope: 'col', rowspan: 2, class: 'num' }, 'p50 A / B'), h('th', { scope: 'col', rowspan: 2, class: 'num' }, 'p99 A / B'));
  return h('div', { class: 'table-wrap rel-scroll' },
    h('table', { class: 'data rel-metrics', 'data-testid': 'relevance-metrics' },
      h('caption', { class: 'visually-hidden' }, 'Metrics of settings A and B'),
      h('thead', {}, h('tr', {}, head1), h('tr', {}, head2)),
      h('tbody', {}, rows)));
}

function rankWords(r) { return r === null || r === undefined ? 'not at all' : `at rank ${r}`; }

/** Per-query changes between A and B, largest first; no-match queries where only one returns hits. */
export function compareQueries(A, B) {
  const byId = new Map((B.per_query || []).map((q) => [q.id, q]));
  const changes = [];
  for (const qa of A.per_query || []) {
    const qb = byId.get(qa.id);
    if (!qb) continue;
    const da = qa['ndcg@10'];
    const db = qb['ndcg@10'];
    const ra = qa.rank_of_first_relevant;
    const rb = qb.rank_of_first_relevant;
    if ((qa.hits > 0) !== (qb.hits > 0)) {
      changes.push({ id: qa.id, kind: 'hits', a: qa, b: qb, size: 1 + Math.abs((db ?? 0) - (da ?? 0)) });
    } else if (ra !== rb || Math.abs((db ?? 0) - (da ?? 0)) > 1e-9) {
      const rankSize = ra === null || rb === null ? 1 : Math.abs(1 / ra - 1 / rb);
      changes.push({ id: qa.id, kind: 'rank', a: qa, b: qb, size: Math.max(Math.abs((db ?? 0) - (da ?? 0)), rankSize) });
    }
  }
  changes.sort((x, y) => y.size - x.size || String(x.id).localeCompare(String(y.id)));
  return changes;
}

function describe(c) {
  const { a, b } = c;
  if (c.kind === 'hits') {
    const who = b.hits > 0 ? 'B' : 'A';
    const other = who === 'B' ? 'A' : 'B';
    const n = who === 'B' ? b.hits : a.hits;
    return `${other} returns nothing, ${who} returns ${n} result${n === 1 ? '' : 's'}.`;
  }
  const ra = a.rank_of_first_relevant;
  const rb = b.rank_of_first_relevant;
  const nd = `nDCG@10 ${fmt3(a['ndcg@10'])} → ${fmt3(b['ndcg@10'])}`;
  if (ra !== rb) {
    const bBetter = rb !== null && (ra === null || rb < ra);
    const [w, rw, rl] = bBetter ? ['B', rb, ra] : ['A', ra, rb];
    return `${w} finds the first relevant product ${rankWords(rw)} instead of ${rankWords(rl)} (${nd}).`;
  }
  return `Same first relevant rank; ${nd}.`;
}

function winsLosses(A, B, queries) {
  const text = new Map(queries.map((q) => [q.id, q.q]));
  const changes = compareQueries(A, B);
  const list = changes.length
    ? h('ul', { class: 'rel-wl', 'data-testid': 'relevance-wins-losses' }, changes.map((c) => {
      const ra = c.a.rank_of_first_relevant;
      const rb = c.b.rank_of_first_relevant;
      const bWins = c.kind === 'hits' ? c.b.hits > 0
        : ra !== rb ? rb !== null && (ra === null || rb < ra) : (c.b['ndcg@10'] ?? 0) > (c.a['ndcg@10'] ?? 0);
      const label = c.kind === 'hits' ? 'No-match' : bWins ? 'B wins' : 'A wins';
      return h('li', { dataset: { id: c.id, kind: c.kind }, class: c.kind === 'hits' ? 'rel-nomatch' : bWins ? 'rel-better' : 'rel-worse' },
        h('span', { class: 'badge' }, label), ' ',
        h('strong', {}, c.id), text.get(c.id) ? h('span', { class: 'muted' }, ` “${text.get(c.id)}”`) : null,
        ': ', describe(c));
    }))
    : h('p', { class: 'muted', 'data-testid': 'relevance-wins-losses' }, 'No query changes between A and B.');
  return [h('h3', {}, `Wins and losses (${changes.length} of ${(A.per_query || []).length} queries differ)`), list];
}

function renderResults(runs, queries) {
  const box = $('rel-results');
  if (!Array.isArray(runs) || runs.length < 2) { showError('The server returned no runs.'); return; }
  const [A, B] = runs;
  fill(box,
    h('h3', {}, `Metrics (${A.queries} queries, k = ${A.k})`),
    metricsTable(A, B),
    winsLosses(A, B, queries));
  box.hidden = false;
}

// ---------------------------------------------------------------------------------------------
// Wiring: load when the panel is shown; forget everything when the dashboard is hidden (sign-out).
// ---------------------------------------------------------------------------------------------

if (panel) {
  fill(panel,
    h('div', { class: 'section-head' }, h('h2', {}, 'Defaults in force'),
      h('button', { type: 'button', class: 'btn btn-sm', 'data-testid': 'relevance-refresh', onclick: loadDefaults }, 'Refresh')),
    h('div', { class: 'alert alert-error', id: 'rel-defaults-error', role: 'alert', hidden: true }),
    h('div', { id: 'rel-defaults' }),
    buildForm(),
    h('div', { class: 'alert alert-error', id: 'rel-error', role: 'alert', 'data-testid': 'relevance-error', hidden: true }),
    h('div', { id: 'rel-results', class: 'rel-results', 'data-testid': 'relevance-results', 'aria-busy': 'false', hidden: true }));
  new MutationObserver(() => { if (!panel.hidden && !loaded) loadDefaults(); })
    .observe(panel, { attributes: true, attributeFilter: ['hidden'] });
  const app = $('app');
  if (app) {
    new MutationObserver(() => {
      if (!app.hidden) return;
      running?.abort();
      loaded = false;
      $('rel-defaults').replaceChildren();
      $('rel-results').replaceChildren();
      $('rel-results').hidden = true;
      $('rel-jsonl').value = '';
      showError('');
    }).observe(app, { attributes: true, attributeFilter: ['hidden'] });
  }
  if (!panel.hidden) loadDefaults();
}
