// Vitrine shopper page: text and photo search, facets, price filter, product detail, "more like this".
import {
  api, h, fill, icon, hydrateIcons, formatPrice, imgOrPlaceholder, isImageFile, prepareImage, announce,
} from './common.js';

const PAGE = 24;
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
  similarBanner: $('similar-banner'), similarImg: $('similar-img'), similarTitle: $('similar-title'), similarBack: $('similar-back'),
  title: $('results-title'), meta: $('results-meta'), active: $('active-filters'),
  error: $('error'), results: $('results'), empty: $('empty'), more: $('load-more'),
  section: $('results-section'),
  dialog: $('detail'), dialogBody: $('detail-body'), dialogClose: $('detail-close'),
};

const state = {
  q: '',
  photo: null, // File
  photoUrl: null,
  category: new Set(),
  brand: new Set(),
  priceMin: null,
  priceMax: null,
  similar: null, // {id, title, thumb} while showing "more like this"
  hits: [],
  total: 0,
  seen: { category: new Map(), brand: new Map() }, // facet values seen for this query (kept while filtering)
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
  const items = Array.from((e.clipboardData && e.clipboardData.files) || []);
  const f = items.find(isImageFile);
  if (f) { e.preventDefault(); setPhoto(f); }
});

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
  runSearch();
});
els.priceClear.addEventListener('click', () => {
  els.priceMin.value = '';
  els.priceMax.value = '';
  if (state.priceMin === null && state.priceMax === null) return;
  state.priceMin = null;
  state.priceMax = null;
  runSearch();
});

function clearAllFilters() {
  state.category.clear();
  state.brand.clear();
  state.priceMin = null;
  state.priceMax = null;
  els.priceMin.value = '';
  els.priceMax.value = '';
  runSearch();
}

function renderFacets(facets) {
  if (facets) {
    for (const kind of ['category', 'brand']) {
      // Counts for this query; values seen earlier stay (at count 0) so OR-selection keeps working.
      const seen = state.seen[kind];
      for (const k of seen.keys()) seen.set(k, 0);
      for (const f of facets[kind] || []) seen.set(String(f.value), f.count);
    }
    state.priceFacets = facets.price || [];
  }
  const chipsFor = (kind, container, group) => {
    const seen = state.seen[kind];
    for (const v of state[kind]) if (!seen.has(v)) seen.set(v, 0);
    const entries = [...seen.entries()]
      .filter(([v, c]) => c > 0 || state[kind].has(v))
      .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    fill(container, ...entries.map(([value, count]) => h('button', {
      type: 'button', class: 'chip', 'aria-pressed': String(state[kind].has(value)),
      'data-testid': `facet-${kind}-chip`, dataset: { value },
      onclick: () => toggleFacet(kind, value),
    }, value, h('span', { class: 'count', 'aria-label': `${count} results` }, String(count)))));
    group.hidden = entries.length === 0;
  };
  chipsFor('category', els.facetCategory, els.groupCategory);
  chipsFor('brand', els.facetBrand, els.groupBrand);

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
        runSearch();
      },
    }, label, h('span', { class: 'count' }, String(b.count)));
  }));

  els.filters.hidden = !!state.similar || (!state.q && !state.photo);
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
  fill(els.active, ...(state.similar ? [] : chips));
}

// ---------- search ----------

els.form.addEventListener('submit', (e) => {
  e.preventDefault();
  newSearch();
});

/** A fresh query (new words or photo): forget facet values from the previous query. */
function newSearch() {
  state.q = els.q.value.trim();
  state.similar = null;
  state.seen.category.clear();
  state.seen.brand.clear();
  state.priceFacets = [];
  state.category.clear();
  state.brand.clear();
  state.priceMin = parsePrice(els.priceMin.value);
  state.priceMax = parsePrice(els.priceMax.value);
  runSearch();
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

function setLoading(on, append = false) {
  state.loading = on;
  els.results.setAttribute('aria-busy', String(on));
  els.searchBtn.disabled = on;
  els.more.disabled = on;
  if (on && !append) {
    els.empty.hidden = true;
    els.more.hidden = true;
    fill(els.results, ...Array.from({ length: 8 }, () => h('div', { class: 'card skeleton', 'aria-hidden': 'true' },
      h('div', { class: 'card-img' }),
      h('div', { class: 'card-body' }, h('div', { class: 'sk-line', style: { width: '40%' } }), h('div', { class: 'sk-line', style: { width: '85%' } }), h('div', { class: 'sk-line', style: { width: '30%' } })),
    )));
    els.meta.textContent = 'Searching…';
  }
  if (on && append) els.more.textContent = 'Loading…';
  if (!on) els.more.textContent = 'Show more results';
}

async function request(offset, signal) {
  if (state.similar) {
    const qs = new URLSearchParams({ k: String(PAGE), offset: String(offset) });
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
    if (filters) fd.append('filters', JSON.stringify(filters));
    return api('/v1/search/image', { method: 'POST', body: fd, signal });
  }
  const body = { q: state.q, k: PAGE, offset, facets: true };
  if (filters) body.filters = filters;
  return api('/v1/search/text', { method: 'POST', json: body, signal });
}

async function runSearch({ append = false, push = true } = {}) {
  if (state.controller) state.controller.abort();
  clearError();
  if (!append && push) syncUrl();
  renderTitle();

  if (!state.similar && !state.q && !state.photo) {
    state.hits = [];
    state.total = 0;
    els.results.replaceChildren();
    els.meta.textContent = '';
    els.more.hidden = true;
    els.filters.hidden = true;
    els.active.replaceChildren();
    showWelcome();
    return;
  }

  const controller = new AbortController();
  state.controller = controller;
  setLoading(true, append);
  const offset = append ? state.hits.length : 0;
  try {
    const res = await request(offset, controller.signal);
    if (controller.signal.aborted) return;
    const hits = Array.isArray(res?.hits) ? res.hits : [];
    state.hits = append ? state.hits.concat(hits) : hits;
    state.total = Number.isFinite(res?.total) ? res.total : state.hits.length;
    if (append) els.results.append(...hits.map(renderCard));
    else fill(els.results, ...state.hits.map(renderCard));
    const took = Number.isFinite(res?.took_ms) ? ` · ${res.took_ms < 10 ? res.took_ms.toFixed(1) : Math.round(res.took_ms)} ms` : '';
    els.meta.textContent = state.hits.length
      ? `${state.total.toLocaleString()} result${state.total === 1 ? '' : 's'}${took}` : '';
    els.more.hidden = !(hits.length > 0 && state.hits.length < state.total);
    if (!append) renderFacets(res?.facets || null);
    if (!state.hits.length) showEmpty(); else els.empty.hidden = true;
    announce(state.hits.length ? `${state.total} results` : 'No results');
  } catch (err) {
    if (err.name === 'AbortError' || controller.signal.aborted) return;
    if (!append) {
      els.results.replaceChildren();
      els.meta.textContent = '';
      els.empty.hidden = true;
    }
    const transient = err.status === 0 || err.status >= 500 || err.status === 429;
    showError(err.message, transient ? () => runSearch({ append, push: false }) : null);
  } finally {
    if (state.controller === controller) {
      state.controller = null;
      setLoading(false);
    }
  }
}

els.more.addEventListener('click', () => runSearch({ append: true, push: false }));

function renderTitle() {
  const q = state.q ? `“${state.q}”` : '';
  let title;
  if (state.similar) title = 'More like this';
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
      h('span', { class: 'card-title', 'data-testid': 'result-title' }, title),
      price ? h('span', { class: 'card-price', 'data-testid': 'result-price' }, price) : null)),
    h('div', { class: 'card-foot' },
      h('button', {
        type: 'button', class: 'btn btn-sm', 'data-testid': 'more-like-this',
        'aria-label': `More like ${title}`,
        onclick: () => showSimilar({ id: hit.id, title, thumb: hit.thumb_url }),
      }, icon('similar'), 'More like this')));
}

function showSimilar(target) {
  if (els.dialog.open) els.dialog.close();
  if (!state.similar) state.beforeSimilar = { scrollY: window.scrollY };
  state.similar = target;
  runSearch();
  window.scrollTo({ top: 0, behavior: 'smooth' });
  els.section.focus({ preventScroll: true });
}

els.similarBack.addEventListener('click', () => {
  state.similar = null;
  runSearch();
});

function showEmpty() {
  const filtered = hasFilters() && !state.similar;
  fill(els.empty, 
    icon('search'),
    h('h2', {}, 'No matching products'),
    h('p', {}, filtered
      ? 'Nothing matches these filters. Try removing some of them.'
      : state.similar ? 'We could not find anything similar to this product yet.'
        : 'Try different words, a broader description, or another photo.'),
    filtered ? h('div', { class: 'suggestions' }, h('button', { type: 'button', class: 'btn', onclick: clearAllFilters }, 'Clear filters')) : null,
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
  else {
    if (state.q) p.set('q', state.q);
    for (const c of state.category) p.append('category', c);
    for (const b of state.brand) p.append('brand', b);
    if (state.priceMin !== null) p.set('price_min', String(state.priceMin));
    if (state.priceMax !== null) p.set('price_max', String(state.priceMax));
  }
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
