// Vitrine shopper page: text and photo search (results as you type, a crop box on the photo),
// highlighted matches, multi-select facets, sort, page numbers, product detail, "more like this".
import {
  api, h, fill, icon, hydrateIcons, formatPrice, imgOrPlaceholder, isImageFile, prepareImage, announce, debounce,
  markedText,
} from './common.js';

const PAGE = 20;
/** Results follow typing after this pause (ms). */
const TYPE_DELAY = 200;
const $ = (id) => document.getElementById(id);

const els = {
  form: $('search-form'), q: $('q'), searchBtn: $('search-button'),
  cameraBtn: $('camera-btn'), chip: $('photo-chip'), chipImg: $('photo-chip-img'), chipName: $('photo-chip-name'),
  chipRemove: $('photo-chip-remove'),
  drop: $('drop-zone'), dropEmpty: $('drop-empty'), dropPreview: $('drop-preview'), photoInput: $('photo-input'),
  previewImg: $('preview-img'), previewName: $('preview-name'), photoReplace: $('photo-replace'), photoRemove: $('photo-remove'),
  filters: $('filters'), filtersDetails: $('filters-details'), filtersCount: $('filters-count'), facetCategory: $('facet-category'), facetBrand: $('facet-brand'), facetPrice: $('facet-price'),
  groupCategory: $('group-category'), groupBrand: $('group-brand'),
  priceForm: $('price-form'), priceMin: $('price-min'), priceMax: $('price-max'), priceClear: $('price-clear'),
  similarBanner: $('similar-banner'), similarImg: $('similar-img'), similarTitle: $('similar-title'), similarClear: $('similar-clear'),
  title: $('results-title'), meta: $('results-meta'), active: $('active-filters'), sort: $('sort'), pager: $('pager'),
  error: $('error'), results: $('results'), empty: $('empty'),
  cropStage: $('crop-stage'), cropBox: $('crop-box'), cropReset: $('crop-reset'),
  section: $('results-section'),
  dialog: $('detail'), dialogBody: $('detail-body'), dialogClose: $('detail-close'),
};

const state = {
  q: '',
  // The shopper asked for the closest items although none passed the relevance floor.
  closest: false,
  photo: null, // File
  photoUrl: null,
  category: new Set(),
  brand: new Set(),
  priceMin: null,
  priceMax: null,
  similar: null, // {id, title, thumb} while showing "more like this"
  crop: null, // {x, y, w, h} relative to the photo, or null for the whole photo
  sort: 'relevance',
  page: 1,
  hits: [],
  total: 0,
  facets: { category: [], brand: [] }, // counts for this query (each without its own selection)
  priceFacets: [],
  controller: null,
  loading: false,
};

hydrateIcons();

// Filters start collapsed on narrow screens (results first), open on wide ones.
const narrow = window.matchMedia('(max-width: 820px)');
const syncFiltersOpen = () => { els.filtersDetails.open = !narrow.matches; };
syncFiltersOpen();
narrow.addEventListener('change', syncFiltersOpen);

// ---------- photo handling ----------

function setPhoto(file) {
  if (!isImageFile(file)) {
    showError('That file is not an image. Please choose a JPEG, PNG or WebP photo.');
    return;
  }
  if (state.photoUrl) URL.revokeObjectURL(state.photoUrl);
  state.photo = file;
  state.photoUrl = URL.createObjectURL(file);
  els.previewImg.src = state.photoUrl;
  els.previewName.textContent = file.name || 'Pasted image';
  els.chipImg.src = state.photoUrl;
  els.chipName.textContent = 'Photo';
  els.dropEmpty.hidden = true;
  els.dropPreview.hidden = false;
  els.drop.classList.add('has-photo');
  els.chip.hidden = false;
  els.q.placeholder = 'Add words to refine (optional)…';
  setCrop(null);
  newSearch();
}

function clearPhoto({ search = true } = {}) {
  if (state.photoUrl) URL.revokeObjectURL(state.photoUrl);
  state.photo = null;
  state.photoUrl = null;
  els.photoInput.value = '';
  els.previewImg.removeAttribute('src');
  els.chipImg.removeAttribute('src');
  els.dropEmpty.hidden = false;
  els.dropPreview.hidden = true;
  els.drop.classList.remove('has-photo');
  els.chip.hidden = true;
  els.q.placeholder = "Describe what you're looking for…";
  setCrop(null);
  if (search) newSearch();
}

// A photo the browser cannot show (e.g. HEIC on some systems) still gets searched; show a placeholder.
for (const img of [els.previewImg, els.chipImg]) {
  img.addEventListener('error', () => { if (img.getAttribute('src')) img.classList.add('broken'); });
  img.addEventListener('load', () => img.classList.remove('broken'));
}

els.photoInput.addEventListener('change', () => {
  const f = els.photoInput.files && els.photoInput.files[0];
  if (f) setPhoto(f);
});
els.cameraBtn.addEventListener('click', () => els.photoInput.click());
els.photoReplace.addEventListener('click', () => els.photoInput.click());
els.photoRemove.addEventListener('click', () => { clearPhoto(); els.q.focus(); });
els.chipRemove.addEventListener('click', () => { clearPhoto(); els.q.focus(); });

// Drag and drop: the drop zone, the search bar, or anywhere on the page.
let dragDepth = 0;
function hasFiles(e) {
  return e.dataTransfer && Array.from(e.dataTransfer.types || []).includes('Files');
}
document.addEventListener('dragenter', (e) => {
  if (!hasFiles(e)) return;
  dragDepth++;
  els.drop.classList.add('dragover');
  els.form.classList.add('dragover');
});
document.addEventListener('dragleave', (e) => {
  if (!hasFiles(e)) return;
  dragDepth = Math.max(0, dragDepth - 1);
  if (!dragDepth) { els.drop.classList.remove('dragover'); els.form.classList.remove('dragover'); }
});
document.addEventListener('dragover', (e) => {
  if (!hasFiles(e)) return;
  e.preventDefault();
  e.dataTransfer.dropEffect = 'copy';
});
document.addEventListener('drop', (e) => {
  if (!hasFiles(e) && !(e.dataTransfer && e.dataTransfer.files.length)) return;
  e.preventDefault();
  dragDepth = 0;
  els.drop.classList.remove('dragover');
  els.form.classList.remove('dragover');
  const f = Array.from(e.dataTransfer.files || []).find(isImageFile) || e.dataTransfer.files[0];
  if (f) setPhoto(f);
});
// Paste an image (e.g. a screenshot) anywhere.
document.addEventListener('paste', (e) => {
  const cd = e.clipboardData;
  if (!cd) return;
  const files = Array.from(cd.files || []);
  for (const item of Array.from(cd.items || [])) {
    if (item.kind === 'file') { const f = item.getAsFile(); if (f && !files.includes(f)) files.push(f); }
  }
  const f = files.find(isImageFile);
  if (f) { e.preventDefault(); setPhoto(f.name ? f : new File([f], 'pasted-image', { type: f.type })); }
});

// ---------- crop box ----------
// The crop is kept relative to the photo ({x, y, w, h} in [0, 1]); the server applies it after
// decoding, so it means the same region whatever size the browser shows the photo at.

const MIN_CROP = 0.05;
const clamp01 = (v) => Math.min(1, Math.max(0, v));

function setCrop(crop, { search = false } = {}) {
  state.crop = crop && crop.w >= 0.999 && crop.h >= 0.999 ? null : crop;
  const c = state.crop;
  els.cropBox.hidden = !c;
  els.cropReset.hidden = !c;
  els.cropStage.classList.toggle('cropping', !!c);
  if (c) {
    Object.assign(els.cropBox.style, {
      left: `${c.x * 100}%`, top: `${c.y * 100}%`, width: `${c.w * 100}%`, height: `${c.h * 100}%`,
    });
    els.cropBox.setAttribute('aria-valuetext', `${Math.round(c.w * 100)}% × ${Math.round(c.h * 100)}% of the photo`);
  }
  if (search) cropSearch();
}

const cropSearch = debounce(() => { state.page = 1; runSearch({ push: false, keep: true }); }, TYPE_DELAY);

function stagePoint(e) {
  const r = els.previewImg.getBoundingClientRect();
  return { x: clamp01((e.clientX - r.left) / r.width), y: clamp01((e.clientY - r.top) / r.height) };
}

function fitCrop(c) {
  const w = Math.min(1, Math.max(MIN_CROP, c.w));
  const h = Math.min(1, Math.max(MIN_CROP, c.h));
  return { x: Math.min(clamp01(c.x), 1 - w), y: Math.min(clamp01(c.y), 1 - h), w, h };
}

let drag = null;
els.cropStage.addEventListener('pointerdown', (e) => {
  if (!state.photo || e.button !== 0) return;
  e.preventDefault();
  const p = stagePoint(e);
  const c = state.crop;
  if (e.target === els.cropBox.querySelector('.crop-handle') && c) drag = { mode: 'resize', start: p, from: c };
  else if (e.target === els.cropBox && c) drag = { mode: 'move', start: p, from: c };
  else drag = { mode: 'draw', start: p, from: null };
  els.cropStage.setPointerCapture(e.pointerId);
});
els.cropStage.addEventListener('pointermove', (e) => {
  if (!drag) return;
  const p = stagePoint(e);
  const { start, from } = drag;
  if (drag.mode === 'draw') {
    const x = Math.min(start.x, p.x);
    const y = Math.min(start.y, p.y);
    setCrop({ x, y, w: Math.abs(p.x - start.x), h: Math.abs(p.y - start.y) });
  } else if (drag.mode === 'move') {
    setCrop(fitCrop({ ...from, x: from.x + p.x - start.x, y: from.y + p.y - start.y }));
  } else {
    setCrop(fitCrop({ ...from, w: Math.min(1 - from.x, from.w + p.x - start.x), h: Math.min(1 - from.y, from.h + p.y - start.y) }));
  }
});
function endDrag(e) {
  if (!drag) return;
  const wasDraw = drag.mode === 'draw';
  drag = null;
  if (els.cropStage.hasPointerCapture?.(e.pointerId)) els.cropStage.releasePointerCapture(e.pointerId);
  // A click without a drag draws nothing.
  if (wasDraw && state.crop && (state.crop.w < MIN_CROP || state.crop.h < MIN_CROP)) { setCrop(null); return; }
  if (state.crop) setCrop(fitCrop(state.crop));
  cropSearch();
}
els.cropStage.addEventListener('pointerup', endDrag);
els.cropStage.addEventListener('pointercancel', endDrag);

els.cropBox.addEventListener('keydown', (e) => {
  const step = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] }[e.key];
  if (!step || !state.crop) {
    if ((e.key === 'Escape' || e.key === 'Delete') && state.crop) { e.preventDefault(); setCrop(null, { search: true }); }
    return;
  }
  e.preventDefault();
  const d = 0.02;
  const c = state.crop;
  const next = e.shiftKey
    ? { ...c, w: Math.min(1 - c.x, c.w + step[0] * d), h: Math.min(1 - c.y, c.h + step[1] * d) }
    : { ...c, x: c.x + step[0] * d, y: c.y + step[1] * d };
  setCrop(fitCrop(next), { search: true });
});
els.cropReset.addEventListener('click', () => { setCrop(null, { search: true }); });

// ---------- filters ----------

function currentFilters() {
  const f = {};
  if (state.category.size) f.category = [...state.category];
  if (state.brand.size) f.brand = [...state.brand];
  if (state.priceMin !== null || state.priceMax !== null) {
    f.price = {};
    if (state.priceMin !== null) f.price.min = state.priceMin;
    if (state.priceMax !== null) f.price.max = state.priceMax;
  }
  return Object.keys(f).length ? f : null;
}

function hasFilters() {
  return state.category.size > 0 || state.brand.size > 0 || state.priceMin !== null || state.priceMax !== null;
}

function toggleFacet(kind, value) {
  const set = state[kind];
  if (set.has(value)) set.delete(value); else set.add(value);
  state.page = 1;
  runSearch();
}

function parsePrice(v) {
  if (v === '' || v === null || v === undefined) return null;
  const n = Number(v);
  return Number.isFinite(n) && n >= 0 ? n : null;
}

els.priceForm.addEventListener('submit', (e) => {
  e.preventDefault();
  let min = parsePrice(els.priceMin.value);
  let max = parsePrice(els.priceMax.value);
  if (min !== null && max !== null && min > max) [min, max] = [max, min];
  state.priceMin = min;
  state.priceMax = max;
  els.priceMin.value = min ?? '';
  els.priceMax.value = max ?? '';
  state.page = 1;
  runSearch();
});
els.priceClear.addEventListener('click', () => {
  els.priceMin.value = '';
  els.priceMax.value = '';
  if (state.priceMin === null && state.priceMax === null) return;
  state.priceMin = null;
  state.priceMax = null;
  state.page = 1;
  runSearch();
});

function clearAllFilters() {
  state.category.clear();
  state.brand.clear();
  state.priceMin = null;
  state.priceMax = null;
  els.priceMin.value = '';
  els.priceMax.value = '';
  state.page = 1;
  runSearch();
}

function renderFacets(facets) {
  if (facets) {
    // The server counts each facet without its own selection, so every value keeps its count.
    for (const kind of ['category', 'brand']) state.facets[kind] = (facets[kind] || []).map((f) => [String(f.value), f.count]);
    state.priceFacets = facets.price || [];
  }
  const optionsFor = (kind, container, group) => {
    const entries = state.facets[kind].slice();
    for (const v of state[kind]) if (!entries.some(([x]) => x === v)) entries.push([v, 0]);
    fill(container, ...entries.map(([value, count]) => {
      const box = h('input', {
        type: 'checkbox', checked: state[kind].has(value), 'data-testid': `facet-${kind}-option`, dataset: { value },
        onchange: () => toggleFacet(kind, value),
      });
      return h('label', { class: 'facet-option', dataset: { value } },
        box, h('span', { class: 'facet-value' }, value),
        h('span', { class: 'count', 'aria-label': `${count} results` }, String(count)));
    }));
    group.hidden = entries.length === 0;
  };
  optionsFor('category', els.facetCategory, els.groupCategory);
  optionsFor('brand', els.facetBrand, els.groupBrand);

  const currency = state.hits[0]?.currency;
  fill(els.facetPrice, ...state.priceFacets.filter((b) => b.count > 0).map((b) => {
    const min = b.min ?? null;
    const max = b.max ?? null;
    const pressed = state.priceMin === min && state.priceMax === max;
    const fp = (v) => formatPrice(v, currency, { compact: true });
    const label = max === null ? `${fp(min)}+`
      : min === null || min === 0 ? `Under ${fp(max)}`
        : `${fp(min)} – ${fp(max)}`;
    return h('button', {
      type: 'button', class: 'chip', 'aria-pressed': String(pressed),
      onclick: () => {
        if (pressed) { state.priceMin = null; state.priceMax = null; } else { state.priceMin = min; state.priceMax = max; }
        els.priceMin.value = state.priceMin ?? '';
        els.priceMax.value = state.priceMax ?? '';
        state.page = 1;
        runSearch();
      },
    }, label, h('span', { class: 'count' }, String(b.count)));
  }));

  els.filters.hidden = !state.similar && !state.q && !state.photo;
  const n = state.category.size + state.brand.size + (state.priceMin !== null || state.priceMax !== null ? 1 : 0);
  els.filtersCount.textContent = String(n);
  els.filtersCount.hidden = n === 0;
  renderActiveFilters();
}

function renderActiveFilters() {
  const chips = [];
  for (const kind of ['category', 'brand']) {
    for (const v of state[kind]) {
      chips.push(h('button', {
        type: 'button', class: 'chip', 'aria-pressed': 'true', 'aria-label': `Remove filter ${kind}: ${v}`,
        onclick: () => toggleFacet(kind, v),
      }, `${v}`, icon('close')));
    }
  }
  if (state.priceMin !== null || state.priceMax !== null) {
    const cur = state.hits[0]?.currency;
    const fp = (v) => formatPrice(v, cur, { compact: true });
    const label = state.priceMin !== null && state.priceMax !== null ? `${fp(state.priceMin)} – ${fp(state.priceMax)}`
      : state.priceMin !== null ? `${fp(state.priceMin)} and up` : `Up to ${fp(state.priceMax)}`;
    chips.push(h('button', {
      type: 'button', class: 'chip', 'aria-pressed': 'true', 'aria-label': `Remove price filter ${label}`,
      onclick: () => els.priceClear.click(),
    }, label, icon('close')));
  }
  if (chips.length > 1) {
    chips.push(h('button', { type: 'button', class: 'btn btn-sm btn-ghost', onclick: clearAllFilters }, 'Clear all'));
  }
  for (const c of chips) c.querySelector('svg')?.setAttribute('style', 'width:14px;height:14px');
  fill(els.active, ...chips);
}

// ---------- search ----------

els.form.addEventListener('submit', (e) => {
  e.preventDefault();
  typeSearch.cancel?.();
  newSearch();
});

// Results as you type: a pause of TYPE_DELAY ms starts a search; a newer one aborts the older
// request, and only the newest request's answer is ever drawn.
const typeSearch = debounce(() => {
  if (els.q.value.trim() === state.q) return;
  newSearch({ keep: true, push: false });
}, TYPE_DELAY);
els.q.addEventListener('input', typeSearch);

els.sort.addEventListener('change', () => {
  state.sort = els.sort.value;
  state.page = 1;
  runSearch();
});

/** A fresh query (new words or photo): filters and page start over. */
function newSearch({ keep = false, push = true } = {}) {
  state.q = els.q.value.trim();
  state.closest = false;
  state.similar = null;
  state.facets = { category: [], brand: [] };
  state.priceFacets = [];
  state.category.clear();
  state.brand.clear();
  state.priceMin = parsePrice(els.priceMin.value);
  state.priceMax = parsePrice(els.priceMax.value);
  state.page = 1;
  runSearch({ keep, push });
}

function showError(message, retry = null) {
  fill(els.error, 
    h('span', { style: { flex: '1' } }, h('strong', {}, 'Search failed: '), h('span', { 'data-testid': 'error-message' }, message)),
    retry ? h('button', { type: 'button', class: 'btn btn-sm', onclick: retry }, 'Try again') : null,
  );
  els.error.hidden = false;
}

function clearError() {
  els.error.hidden = true;
  els.error.replaceChildren();
}

/**
 * `keep`: leave the current results on screen (dimmed) while the next ones load, as when typing;
 * otherwise show placeholders.
 */
function setLoading(on, keep = false) {
  state.loading = on;
  els.results.setAttribute('aria-busy', String(on));
  els.results.classList.toggle('stale', on && keep);
  if (on && !keep) {
    els.empty.hidden = true;
    els.pager.hidden = true;
    fill(els.results, ...Array.from({ length: 8 }, () => h('div', { class: 'card skeleton', 'aria-hidden': 'true' },
      h('div', { class: 'card-img' }),
      h('div', { class: 'card-body' }, h('div', { class: 'sk-line', style: { width: '40%' } }), h('div', { class: 'sk-line', style: { width: '85%' } }), h('div', { class: 'sk-line', style: { width: '30%' } })),
    )));
    els.meta.textContent = 'Searching…';
  }
}

/** The filters as a query string (for more like this, a GET route). */
function filterParams(p) {
  for (const c of state.category) p.append('category', c);
  for (const b of state.brand) p.append('brand', b);
  if (state.priceMin !== null) p.set('price_min', String(state.priceMin));
  if (state.priceMax !== null) p.set('price_max', String(state.priceMax));
  return p;
}

async function request(offset, signal) {
  if (state.similar) {
    const qs = filterParams(new URLSearchParams({ k: String(PAGE), offset: String(offset), facets: 'true', sort: state.sort }));
    return api(`/v1/products/${encodeURIComponent(state.similar.id)}/similar?${qs}`, { signal });
  }
  const filters = currentFilters();
  if (state.photo) {
    const fd = new FormData();
    const img = await prepareImage(state.photo);
    fd.append('image', img, img.name || 'photo.jpg');
    if (state.q) fd.append('q', state.q);
    fd.append('k', String(PAGE));
    fd.append('offset', String(offset));
    fd.append('facets', 'true');
    fd.append('sort', state.sort);
    if (filters) fd.append('filters', JSON.stringify(filters));
    if (state.crop) fd.append('crop', JSON.stringify(state.crop));
    // `"floor": {}` turns the relevance floor off: the nearest items, however far.
    if (state.closest) fd.append('fusion', JSON.stringify({ floor: {} }));
    return api('/v1/search/image', { method: 'POST', body: fd, signal });
  }
  const body = { q: state.q, k: PAGE, offset, facets: true, sort: state.sort };
  if (filters) body.filters = filters;
  if (state.closest) body.fusion = { floor: {} };
  return api('/v1/search/text', { method: 'POST', json: body, signal });
}

async function runSearch({ keep = false, push = true } = {}) {
  if (state.controller) state.controller.abort();
  clearError();
  if (push) syncUrl();
  renderTitle();

  if (!state.similar && !state.q && !state.photo) {
    state.controller = null;
    state.hits = [];
    state.total = 0;
    els.results.replaceChildren();
    els.meta.textContent = '';
    els.pager.hidden = true;
    els.filters.hidden = true;
    els.active.replaceChildren();
    setLoading(false);
    showWelcome();
    return;
  }

  const controller = new AbortController();
  state.controller = controller;
  setLoading(true, keep);
  const offset = (state.page - 1) * PAGE;
  try {
    const res = await request(offset, controller.signal);
    // A newer search started while this one ran: its answer must not be drawn over the newer one.
    if (controller.signal.aborted || state.controller !== controller) return;
    const hits = Array.isArray(res?.hits) ? res.hits : [];
    state.hits = hits;
    state.total = Number.isFinite(res?.total) ? res.total : hits.length;
    fill(els.results, ...hits.map(renderCard));
    els.results.dataset.query = state.q;
    const took = Number.isFinite(res?.took_ms) ? ` · ${res.took_ms < 10 ? res.took_ms.toFixed(1) : Math.round(res.took_ms)} ms` : '';
    els.meta.textContent = state.total
      ? `${state.closest ? 'Nothing matched closely; the nearest items: ' : ''}${state.total.toLocaleString()} result${state.total === 1 ? '' : 's'}${took}` : '';
    renderPager();
    renderFacets(res?.facets || null);
    if (!hits.length) showEmpty(); else els.empty.hidden = true;
    announce(state.total ? `${state.total} results` : 'No results');
  } catch (err) {
    if (err.name === 'AbortError' || controller.signal.aborted || state.controller !== controller) return;
    els.results.replaceChildren();
    els.meta.textContent = '';
    els.empty.hidden = true;
    els.pager.hidden = true;
    const transient = err.status === 0 || err.status >= 500 || err.status === 429;
    showError(err.message, transient ? () => runSearch({ push: false }) : null);
  } finally {
    if (state.controller === controller) {
      state.controller = null;
      setLoading(false);
    }
  }
}

/** Page numbers: first, last, and two on each side of the current page, with gaps as "…". */
function renderPager() {
  const pages = Math.ceil(state.total / PAGE);
  els.pager.hidden = pages <= 1;
  if (pages <= 1) { els.pager.replaceChildren(); return; }
  const cur = Math.min(state.page, pages);
  const go = (p) => () => {
    state.page = p;
    runSearch();
    els.section.focus({ preventScroll: true });
    window.scrollTo({ top: 0 });
  };
  const shown = [...new Set([1, pages, ...[-2, -1, 0, 1, 2].map((d) => cur + d)])].filter((p) => p >= 1 && p <= pages).sort((a, b) => a - b);
  const items = [h('button', { type: 'button', class: 'btn btn-sm', disabled: cur === 1, 'data-testid': 'page-prev', onclick: go(cur - 1) }, 'Previous')];
  let last = 0;
  for (const p of shown) {
    if (p > last + 1) items.push(h('span', { class: 'pager-gap', 'aria-hidden': 'true' }, '…'));
    items.push(h('button', {
      type: 'button', class: 'btn btn-sm page-num', 'data-testid': 'page', dataset: { page: String(p) },
      'aria-label': `Page ${p}`, 'aria-current': p === cur ? 'page' : null, onclick: go(p),
    }, String(p)));
    last = p;
  }
  items.push(h('button', { type: 'button', class: 'btn btn-sm', disabled: cur === pages, 'data-testid': 'page-next', onclick: go(cur + 1) }, 'Next'));
  fill(els.pager, ...items);
}


function renderTitle() {
  const q = state.q ? `“${state.q}”` : '';
  let title;
  if (state.similar) title = `Similar to ${state.similar.title || state.similar.id}`;
  else if (state.photo && q) title = `Results for your photo + ${q}`;
  else if (state.photo) title = 'Results for your photo';
  else if (q) title = `Results for ${q}`;
  else title = 'Find it by photo or description';
  els.title.textContent = title;
  document.title = state.similar || q || state.photo ? `${title} · Vitrine` : 'Vitrine · Search products by photo or description';

  els.similarBanner.hidden = !state.similar;
  if (state.similar) {
    els.similarTitle.textContent = state.similar.title || state.similar.id;
    if (state.similar.thumb) { els.similarImg.src = state.similar.thumb; els.similarImg.hidden = false; } else els.similarImg.hidden = true;
    els.similarImg.alt = '';
  }
}

function renderCard(hit) {
  const title = hit.title || hit.id;
  const price = formatPrice(hit.price, hit.currency);
  return h('article', { class: 'card', 'data-testid': 'result-card', dataset: { id: hit.id } },
    h('button', {
      type: 'button', class: 'card-open', 'data-testid': 'open-detail',
      onclick: () => openDetail(hit.id, hit),
    },
    h('div', { class: 'card-img' }, imgOrPlaceholder(hit.thumb_url || hit.image_url, title)),
    h('div', { class: 'card-body' },
      hit.brand ? h('span', { class: 'card-brand' }, hit.brand) : null,
      h('span', { class: 'card-title', 'data-testid': 'result-title' }, hit.highlights?.title ? markedText(hit.highlights.title) : title),
      price ? h('span', { class: 'card-price', 'data-testid': 'result-price' }, price) : null)),
    h('div', { class: 'card-foot' },
      h('button', {
        type: 'button', class: 'btn btn-sm', 'data-testid': 'more-like-this',
        'aria-label': `More like ${title}`,
        onclick: () => showSimilar({ id: hit.id, title, thumb: hit.thumb_url }),
      }, icon('similar'), 'More like this')));
}

/** More like this: keeps the filters and sort, clears the search box, and says what it is similar to. */
function showSimilar(target) {
  if (els.dialog.open) els.dialog.close();
  typeSearch.cancel?.();
  state.similar = target;
  state.q = '';
  els.q.value = '';
  state.page = 1;
  runSearch();
  window.scrollTo({ top: 0, behavior: 'smooth' });
  els.section.focus({ preventScroll: true });
}

els.similarClear.addEventListener('click', () => {
  state.similar = null;
  state.page = 1;
  runSearch();
  els.q.focus();
});

/** The "no results" state: what was searched, and what to try next. */
function showEmpty() {
  const filtered = hasFilters();
  const what = state.similar ? `items similar to “${state.similar.title || state.similar.id}”`
    : state.q ? `“${state.q}”` : 'your photo';
  fill(els.empty,
    icon('search'),
    h('h2', {}, `No results for ${what}`),
    h('p', {}, filtered
      ? 'Nothing matches these filters. Try clearing some of them.'
      : state.photo ? 'Try another photo, a different part of it, or describe what you want.'
        : 'Try different words, fewer words, or search with a photo.'),
    h('div', { class: 'suggestions' },
      filtered ? h('button', { type: 'button', class: 'btn', 'data-testid': 'empty-clear-filters', onclick: clearAllFilters }, 'Clear filters') : null,
      state.crop ? h('button', { type: 'button', class: 'btn', onclick: () => setCrop(null, { search: true }) }, 'Search the whole photo') : null,
      !state.photo ? h('button', { type: 'button', class: 'btn', 'data-testid': 'empty-try-photo', onclick: () => els.photoInput.click() }, icon('camera'), 'Try a photo') : null,
      // Nothing was close enough to count as a match: offer the nearest items, said as such.
      !filtered && !state.similar && !state.closest ? h('button', { type: 'button', class: 'btn', 'data-testid': 'empty-show-closest',
        onclick: () => { state.closest = true; runSearch({ push: false }); } }, 'Show the closest items anyway') : null),
  );
  els.empty.hidden = false;
}

function showWelcome() {
  fill(els.empty, 
    icon('camera'),
    h('h2', {}, 'Search the catalog your way'),
    h('p', {}, 'Describe what you want — “orange poster”, “cat mug” — or show us a photo: drop it here, paste it, or take one with your phone. You can combine both.'),
    h('div', { class: 'suggestions' },
      h('button', { type: 'button', class: 'btn btn-primary', onclick: () => els.photoInput.click() }, icon('camera'), 'Search with a photo'),
      h('button', { type: 'button', class: 'btn', onclick: () => els.q.focus() }, icon('search'), 'Type a description')),
  );
  els.empty.hidden = false;
}

// ---------- product detail ----------

let detailSeq = 0;
async function openDetail(id, hint = {}) {
  const seq = ++detailSeq;
  const opener = document.activeElement;
  renderDetail({ id, title: hint.title, brand: hint.brand, price: hint.price, currency: hint.currency, image_urls: hint.image_url ? [hint.image_url] : [] }, true);
  if (!els.dialog.open) els.dialog.showModal();
  els.dialog.returnFocusTo = opener;
  try {
    const p = await api(`/v1/products/${encodeURIComponent(id)}`);
    if (seq !== detailSeq) return;
    renderDetail(p, false);
  } catch (err) {
    if (seq !== detailSeq) return;
    renderDetail({ id, title: hint.title, image_urls: hint.image_url ? [hint.image_url] : [] }, false, err.message);
  }
}

function renderDetail(p, loading, errorMessage) {
  const title = p.title || p.id;
  const images = (p.image_urls && p.image_urls.length ? p.image_urls : []).slice();
  const thumbs = p.thumb_urls && p.thumb_urls.length === images.length ? p.thumb_urls : images;
  const mainImg = images.length
    ? h('img', { class: 'main-img', src: images[0], alt: title, 'data-testid': 'detail-image' })
    : h('div', { class: 'main-img placeholder-img', role: 'img', 'aria-label': 'No image' }, icon('image'));

  const thumbRow = images.length > 1 ? h('div', { class: 'detail-thumbs', role: 'group', 'aria-label': 'Product photos' },
    images.map((src, i) => h('button', {
      type: 'button', 'aria-label': `Show photo ${i + 1} of ${images.length}`, 'aria-current': String(i === 0),
      onclick: (e) => {
        mainImg.src = src;
        for (const b of e.currentTarget.parentElement.children) b.setAttribute('aria-current', 'false');
        e.currentTarget.setAttribute('aria-current', 'true');
      },
    }, h('img', { src: thumbs[i], alt: '' })))) : null;

  const attrs = p.attributes && typeof p.attributes === 'object' ? Object.entries(p.attributes) : [];
  const price = formatPrice(p.price, p.currency);

  fill(els.dialogBody, h('div', { class: 'detail' },
    h('div', { class: 'detail-media' }, mainImg, thumbRow),
    h('div', { class: 'detail-info' },
      p.brand ? h('span', { class: 'card-brand' }, p.brand) : null,
      h('h2', { id: 'detail-title', 'data-testid': 'detail-title' }, title),
      price ? h('div', { class: 'detail-price' }, price) : null,
      p.category ? h('div', {}, h('span', { class: 'badge' }, p.category)) : null,
      loading ? h('div', { class: 'muted', style: { display: 'flex', gap: '8px', alignItems: 'center' } }, h('span', { class: 'spinner' }), 'Loading details…') : null,
      errorMessage ? h('div', { class: 'alert alert-error', role: 'alert', 'data-testid': 'error' }, errorMessage) : null,
      p.description ? h('p', { class: 'detail-desc', 'data-testid': 'detail-description' }, p.description) : null,
      attrs.length ? h('dl', { class: 'attrs' }, attrs.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, Array.isArray(v) ? v.join(', ') : String(v))])) : null,
      h('div', { class: 'detail-actions' },
        h('button', {
          type: 'button', class: 'btn btn-primary', 'data-testid': 'more-like-this',
          onclick: () => showSimilar({ id: p.id, title, thumb: (p.thumb_urls && p.thumb_urls[0]) || images[0] }),
        }, icon('similar'), 'More like this'),
        p.url && /^https?:\/\//i.test(p.url) ? h('a', { class: 'btn', href: p.url, target: '_blank', rel: 'noopener noreferrer' }, 'View product page') : null,
      ),
    ),
  ));
}

els.dialogClose.addEventListener('click', () => els.dialog.close());
els.dialog.addEventListener('click', (e) => { if (e.target === els.dialog) els.dialog.close(); });
els.dialog.addEventListener('close', () => {
  detailSeq++;
  const back = els.dialog.returnFocusTo;
  if (back && back.isConnected) back.focus();
});

// ---------- URL state (shareable text searches, back/forward) ----------

function syncUrl() {
  const p = new URLSearchParams();
  if (state.similar) p.set('similar', state.similar.id);
  else if (state.q) p.set('q', state.q);
  filterParams(p);
  if (state.sort !== 'relevance') p.set('sort', state.sort);
  if (state.page > 1) p.set('page', String(state.page));
  const url = p.toString() ? `?${p}` : location.pathname;
  if (url !== location.search && !(url === location.pathname && !location.search)) {
    history.pushState(null, '', url);
  }
}

function loadFromUrl() {
  const p = new URLSearchParams(location.search);
  state.q = p.get('q') || '';
  els.q.value = state.q;
  state.category = new Set(p.getAll('category'));
  state.brand = new Set(p.getAll('brand'));
  state.priceMin = parsePrice(p.get('price_min'));
  state.priceMax = parsePrice(p.get('price_max'));
  els.priceMin.value = state.priceMin ?? '';
  els.priceMax.value = state.priceMax ?? '';
  const sort = p.get('sort');
  state.sort = ['price_asc', 'price_desc'].includes(sort) ? sort : 'relevance';
  els.sort.value = state.sort;
  const page = Number.parseInt(p.get('page') || '1', 10);
  state.page = Number.isFinite(page) && page >= 1 && page <= 500 ? page : 1;
  const sim = p.get('similar');
  state.similar = sim ? { id: sim, title: sim } : null;
  if (sim) {
    api(`/v1/products/${encodeURIComponent(sim)}`).then((prod) => {
      if (state.similar && state.similar.id === sim) {
        state.similar = { id: sim, title: prod.title || sim, thumb: prod.thumb_urls && prod.thumb_urls[0] };
        renderTitle();
      }
    }).catch(() => {});
  }
}

window.addEventListener('popstate', () => {
  loadFromUrl();
  runSearch({ push: false });
});

// Keyboard shortcut: "/" focuses the search box.
document.addEventListener('keydown', (e) => {
  if (e.key === '/' && !e.ctrlKey && !e.metaKey && !/^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement?.tagName || '') && !els.dialog.open) {
    e.preventDefault();
    els.q.focus();
  }
});

loadFromUrl();
runSearch({ push: false });
