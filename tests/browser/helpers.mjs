// Shared set-up for the browser tests: Debian's Chromium driven by playwright-core.
// Environment: VITRINE_URL (server), VITRINE_ADMIN_KEY, CHROMIUM_PATH, SCREENSHOT_DIR.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BASE = (process.env.VITRINE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
export const ADMIN_KEY = process.env.VITRINE_ADMIN_KEY || '';
export const SHOTS = process.env.SCREENSHOT_DIR || path.join(ROOT, 'artifacts', 'screenshots');
export const DEMO = path.join(ROOT, 'demo');

const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-quic'];

/** Launches Chromium. playwright-core gives every launch a fresh temporary user data dir. */
export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: ARGS,
    timeout: 60_000,
  });
}

/**
 * A fresh context + page (own cookies and sessionStorage) that records page errors.
 * `page.errors` collects uncaught exceptions; call assertNoPageErrors(page) at the end of a test.
 */
export async function newPage(browser, opts = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true, ...opts });
  context.setDefaultTimeout(20_000);
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) page.errors.push(`console: ${m.text()}`);
  });
  return page;
}

export function assertNoPageErrors(page) {
  assert.deepEqual(page.errors, [], `uncaught errors in the page: ${page.errors.join(' | ')}`);
}

export async function screenshot(page, name) {
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

/** Retries `fn` until it returns a truthy value (or stops throwing); throws the last error at the deadline. */
export async function eventually(fn, { timeout = 20_000, interval = 250, message = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let lastErr;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      lastErr = null;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() > deadline) {
      throw lastErr || new Error(`timed out after ${timeout} ms waiting for ${message}`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** The ids of the result cards, in order. */
export async function resultIds(page) {
  return page.$$eval('[data-testid="results"] [data-testid="result-card"]', (cards) => cards.map((c) => c.dataset.id));
}

/** Waits until the results grid is not busy (search finished). */
export async function resultsSettled(page) {
  await page.waitForSelector('[data-testid="results"][aria-busy="false"]', { state: 'attached' });
}

/** Types `q` into the shopper search bar, submits, and waits for the search to finish. */
export async function textSearch(page, q) {
  await page.fill('[data-testid="search-input"]', q);
  const resp = page.waitForResponse((r) => r.url().includes('/v1/search') && r.request().method() === 'POST');
  await page.click('[data-testid="search-button"]');
  await resp;
  await resultsSettled(page);
  return resultIds(page);
}

/** Signs in to /admin through the key prompt. */
export async function adminLogin(page, key = ADMIN_KEY) {
  assert.ok(key, 'VITRINE_ADMIN_KEY must be set');
  await page.goto(`${BASE}/admin`);
  await page.fill('[data-testid="admin-key-input"]', key);
  await page.click('[data-testid="admin-key-submit"]');
  await page.waitForSelector('[data-testid="overview"] [data-stat="products"]');
}

/** Calls the API directly (for set-up and cross-checks). */
export async function apiJson(pathname, { key = ADMIN_KEY, ...init } = {}) {
  const headers = { ...(init.headers || {}) };
  if (key) headers.Authorization = `Bearer ${key}`;
  const res = await fetch(`${BASE}${pathname}`, { ...init, headers });
  const text = await res.text();
  let body;
  try { body = JSON.parse(text); } catch { body = text; }
  return { status: res.status, body };
}

/** Catalog lines from demo/catalog.jsonl. */
export function demoCatalog() {
  return fs.readFileSync(path.join(DEMO, 'catalog.jsonl'), 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
}
