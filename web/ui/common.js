// Shared helpers for the shopper page and the admin dashboard. Plain ES module, no dependencies.

/** An error from the API, carrying the HTTP status and the `{"error": {code, message}}` body. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

/**
 * fetch() that parses JSON and turns non-2xx answers into ApiError with the server's message.
 * `opts.key` adds `Authorization: Bearer KEY`; `opts.json` sends a JSON body.
 */
export async function api(path, opts = {}) {
  const { key, json, headers = {}, raw = false, ...rest } = opts;
  const h = { Accept: 'application/json', ...headers };
  if (key) h.Authorization = `Bearer ${key}`;
  let body = rest.body;
  if (json !== undefined) {
    h['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  }
  let res;
  try {
    res = await fetch(path, { ...rest, headers: h, body });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network_error', 'Could not reach the server. Check your connection and try again.');
  }
  if (!res.ok) {
    let code = `http_${res.status}`;
    let message = `${res.status} ${res.statusText || 'Request failed'}`;
    try {
      const text = await res.text();
      try {
        const data = JSON.parse(text);
        if (data && data.error) {
          code = data.error.code || code;
          message = data.error.message || message;
        }
      } catch {
        if (text && text.length < 300) message = text;
      }
    } catch { /* body unreadable: keep the status line */ }
    throw new ApiError(res.status, code, message);
  }
  if (raw) return res;
  if (res.status === 204) return null;
  const ct = res.headers.get('content-type') || '';
  return ct.includes('json') ? res.json() : res.text();
}

/**
 * Tiny DOM builder: h('div', {class: 'x', onclick: fn, dataset: {id: 1}}, child, 'text', [more]).
 * Attribute values of null/undefined/false are skipped; children may be nodes, strings or arrays.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'style' && typeof v === 'object') Object.assign(el.style, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'html') el.innerHTML = v;
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** SVG element builder (same signature as h). */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const ICONS = {
  search: '<circle cx="11" cy="11" r="7"/><path d="m20 20-3.5-3.5"/>',
  camera: '<path d="M4 8h3l2-3h6l2 3h3a1 1 0 0 1 1 1v10a1 1 0 0 1-1 1H4a1 1 0 0 1-1-1V9a1 1 0 0 1 1-1Z"/><circle cx="12" cy="13.5" r="3.5"/>',
  upload: '<path d="M12 16V4"/><path d="m7 9 5-5 5 5"/><path d="M4 16v3a1 1 0 0 0 1 1h14a1 1 0 0 0 1-1v-3"/>',
  close: '<path d="M6 6l12 12M18 6 6 18"/>',
  image: '<rect x="3" y="4" width="18" height="16" rx="2"/><circle cx="9" cy="10" r="2"/><path d="m21 16-5-5-9 9"/>',
  similar: '<rect x="3" y="3" width="8" height="8" rx="1.5"/><rect x="13" y="13" width="8" height="8" rx="1.5"/><path d="M13 7h4a1 1 0 0 1 1 1v3M11 17H7a1 1 0 0 1-1-1v-3"/>',
  back: '<path d="M15 18l-6-6 6-6"/>',
  logo: '<circle cx="10.5" cy="10.5" r="5.5"/><path d="m15 15 5 5"/><path d="M8 10.5h5M10.5 8v5"/>',
  overview: '<rect x="3" y="3" width="7" height="9" rx="1"/><rect x="14" y="3" width="7" height="5" rx="1"/><rect x="14" y="12" width="7" height="9" rx="1"/><rect x="3" y="16" width="7" height="5" rx="1"/>',
  ingest: '<path d="M12 4v11"/><path d="m7 10 5 5 5-5"/><path d="M4 19h16"/>',
  products: '<path d="M3 7l9-4 9 4-9 4-9-4Z"/><path d="M3 7v10l9 4 9-4V7"/><path d="M12 11v10"/>',
  playground: '<path d="M9 3h6M10 3v6l-5 9a2 2 0 0 0 1.7 3h10.6A2 2 0 0 0 19 18l-5-9V3"/><path d="M7 15h10"/>',
  health: '<path d="M3 12h4l3-7 4 14 3-7h4"/>',
  logout: '<path d="M15 4h3a2 2 0 0 1 2 2v12a2 2 0 0 1-2 2h-3"/><path d="M10 17l-5-5 5-5M5 12h11"/>',
  refresh: '<path d="M20 11a8 8 0 0 0-14.5-4.5L4 8"/><path d="M4 4v4h4"/><path d="M4 13a8 8 0 0 0 14.5 4.5L20 16"/><path d="M20 20v-4h-4"/>',
  download: '<path d="M12 4v11"/><path d="m7 10 5 5 5-5"/><path d="M5 20h14"/>',
  key: '<circle cx="8" cy="15" r="4"/><path d="m11 12 9-9M17 6l3 3M15 8l2 2"/>',
};

/** An inline SVG icon (stroke style, inherits currentColor). */
export function icon(name, cls = '') {
  const el = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  el.setAttribute('viewBox', '0 0 24 24');
  el.setAttribute('fill', 'none');
  el.setAttribute('stroke', 'currentColor');
  el.setAttribute('stroke-width', '2');
  el.setAttribute('stroke-linecap', 'round');
  el.setAttribute('stroke-linejoin', 'round');
  el.setAttribute('aria-hidden', 'true');
  el.setAttribute('focusable', 'false');
  if (cls) el.setAttribute('class', cls);
  el.innerHTML = ICONS[name] || '';
  return el;
}

/** Replace placeholders like <span data-icon="search"></span> with inline icons. */
export function hydrateIcons(root = document) {
  for (const ph of root.querySelectorAll('[data-icon]')) {
    const svg = icon(ph.dataset.icon, ph.getAttribute('class') || '');
    ph.replaceWith(svg);
  }
}

const priceFormats = new Map();
/**
 * (19.5, "USD") → "$19.50" in the user's locale; falls back to "19.50 XYZ" for unknown codes.
 * `compact` drops ".00" from whole amounts (for filter chips).
 */
export function formatPrice(price, currency, { compact = false } = {}) {
  if (price === null || price === undefined || price === '' || Number.isNaN(Number(price))) return '';
  const n = Number(price);
  const cur = (currency || '').toUpperCase();
  const whole = compact && Number.isInteger(n);
  if (cur) {
    try {
      const key = `${cur}|${whole}`;
      let f = priceFormats.get(key);
      if (!f) {
        f = new Intl.NumberFormat(undefined, { style: 'currency', currency: cur, ...(whole ? { minimumFractionDigits: 0, maximumFractionDigits: 0 } : {}) });
        priceFormats.set(key, f);
      }
      return f.format(n);
    } catch { /* not an ISO 4217 code */ }
  }
  return `${whole ? n : n.toFixed(2)}${cur ? ` ${cur}` : ''}`;
}

const nf = new Intl.NumberFormat();
export function formatNumber(n) {
  if (n === null || n === undefined || Number.isNaN(Number(n))) return '—';
  return nf.format(n);
}

/** 1536 → "1.5 KiB" */
export function formatBytes(bytes) {
  if (bytes === null || bytes === undefined || Number.isNaN(Number(bytes))) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = Number(bytes);
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)} ${units[i]}`;
}

/** 93784 → "1d 2h 3m"; 75 → "1m 15s". */
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(Number(seconds))) return '—';
  let s = Math.max(0, Math.round(Number(seconds)));
  const d = Math.floor(s / 86400); s -= d * 86400;
  const hr = Math.floor(s / 3600); s -= hr * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (d) return `${d}d ${hr}h ${m}m`;
  if (hr) return `${hr}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

export function formatMs(ms) {
  if (ms === null || ms === undefined || Number.isNaN(Number(ms))) return '—';
  const v = Number(ms);
  if (v >= 1000) return `${(v / 1000).toFixed(2)} s`;
  if (v >= 100) return `${v.toFixed(0)} ms`;
  if (v >= 10) return `${v.toFixed(1)} ms`;
  return `${v.toFixed(2)} ms`;
}

/** Accepts seconds or milliseconds since the epoch, or an ISO string. */
export function parseTime(t) {
  if (t === null || t === undefined || t === '') return null;
  if (typeof t === 'number') return new Date(t < 1e12 ? t * 1000 : t);
  const d = new Date(t);
  return Number.isNaN(d.getTime()) ? null : d;
}

export function formatTime(t) {
  const d = parseTime(t);
  if (!d) return '—';
  const sameDay = d.toDateString() === new Date().toDateString();
  return sameDay ? d.toLocaleTimeString() : d.toLocaleString();
}

/** `fn` called once calls pause for `ms`; `.cancel()` drops a pending call. */
export function debounce(fn, ms) {
  let t;
  const d = (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
  d.cancel = () => clearTimeout(t);
  return d;
}

/**
 * Nodes for a server highlight: HTML-escaped text with matches in <mark>…</mark>. The string is
 * parsed into an inert document (nothing in it loads or runs) and only its text and <mark>
 * elements are kept, so a title such as `<img src=x onerror=…>` stays text even if the server
 * ever failed to escape it.
 */
export function markedText(html) {
  const doc = new DOMParser().parseFromString(`<body>${String(html)}</body>`, 'text/html');
  const out = document.createDocumentFragment();
  const walk = (node, into) => {
    for (const c of node.childNodes) {
      if (c.nodeType === Node.TEXT_NODE) into.append(document.createTextNode(c.textContent));
      else if (c.nodeType === Node.ELEMENT_NODE && c.tagName === 'MARK') {
        const m = document.createElement('mark');
        m.textContent = c.textContent;
        into.append(m);
      } else if (c.nodeType === Node.ELEMENT_NODE) walk(c, into);
    }
  };
  walk(doc.body, out);
  return out;
}

/** A placeholder shown when an image is missing or fails to load. */
export function imgOrPlaceholder(src, alt, attrs = {}) {
  if (!src) return h('div', { class: 'placeholder-img', role: 'img', 'aria-label': alt || 'No image' }, icon('image'));
  const img = h('img', { src, alt: alt || '', loading: 'lazy', decoding: 'async', ...attrs });
  img.addEventListener('error', () => {
    if (img.isConnected) img.replaceWith(h('div', { class: 'placeholder-img', role: 'img', 'aria-label': alt || 'Image unavailable' }, icon('image')));
  }, { once: true });
  return img;
}

/** Whether a dropped/pasted/picked file looks like an image. */
export function isImageFile(f) {
  if (!f) return false;
  if (f.type) return f.type.startsWith('image/');
  return /\.(jpe?g|png|webp|gif|bmp|avif|heic|heif)$/i.test(f.name || '');
}

/**
 * Shrinks very large photos (phone cameras) before upload; small ones are sent unchanged.
 * Returns a Blob/File.
 */
export async function prepareImage(file, maxSide = 1600) {
  if (!file || file.size < 1.5 * 1024 * 1024 || typeof createImageBitmap !== 'function') return file;
  try {
    const bmp = await createImageBitmap(file);
    const scale = Math.min(1, maxSide / Math.max(bmp.width, bmp.height));
    if (scale >= 1) { bmp.close?.(); return file; }
    const canvas = document.createElement('canvas');
    canvas.width = Math.round(bmp.width * scale);
    canvas.height = Math.round(bmp.height * scale);
    canvas.getContext('2d').drawImage(bmp, 0, 0, canvas.width, canvas.height);
    bmp.close?.();
    const blob = await new Promise((res) => canvas.toBlob(res, 'image/jpeg', 0.9));
    if (!blob) return file;
    return new File([blob], (file.name || 'photo').replace(/\.\w+$/, '') + '.jpg', { type: 'image/jpeg' });
  } catch {
    return file;
  }
}

/** Announce a message to screen readers through a shared live region. */
export function announce(text) {
  let live = document.getElementById('sr-live');
  if (!live) {
    live = h('div', { id: 'sr-live', class: 'visually-hidden', 'aria-live': 'polite', role: 'status' });
    document.body.append(live);
  }
  live.textContent = '';
  setTimeout(() => { live.textContent = text; }, 30);
}

/** el.replaceChildren() that skips null/undefined/false children (and flattens arrays). */
export function fill(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}
