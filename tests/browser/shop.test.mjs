// Shopper page (/): photo search, text search, detail panel, "more like this", facets, errors.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  BASE, DEMO, launchBrowser, newPage, screenshot, assertNoPageErrors, resultIds, resultsSettled, textSearch,
  eventually, demoCatalog,
} from './helpers.mjs';

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

async function photoSearch(page, file) {
  const resp = page.waitForResponse((r) => r.url().includes('/v1/search/image'));
  await page.setInputFiles('[data-testid="photo-input"]', file);
  const r = await resp;
  assert.equal(r.status(), 200, `POST /v1/search/image answered ${r.status()}`);
  await resultsSettled(page);
  return resultIds(page);
}

test('uploading a photo finds that product first', async () => {
  const page = await newPage(browser);
  await page.goto(`${BASE}/`);
  const ids = await photoSearch(page, path.join(DEMO, 'queries', 'sku-007.jpg'));
  await screenshot(page, '01-photo-search');
  assert.ok(ids.length > 0, 'no result cards');
  assert.equal(ids[0], 'sku-007', `first results: ${ids.slice(0, 5).join(', ')}`);
  // The preview of the uploaded photo is shown.
  assert.ok(await page.isVisible('#drop-preview img'), 'photo preview not shown');
  const card = page.locator('[data-testid="result-card"]').first();
  assert.ok(await card.locator('img').evaluate((img) => img.complete && img.naturalWidth > 0), 'thumbnail did not load');
  assertNoPageErrors(page);
  await page.context().close();
});

test('a photo dropped on the drop zone searches, and text refines it', async () => {
  const page = await newPage(browser);
  await page.goto(`${BASE}/`);
  const bytes = fs.readFileSync(path.join(DEMO, 'queries', 'sku-011.jpg')).toString('base64');
  const resp = page.waitForResponse((r) => r.url().includes('/v1/search/image'));
  const dt = await page.evaluateHandle((b64) => {
    const bin = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const d = new DataTransfer();
    d.items.add(new File([bin], 'dropped.jpg', { type: 'image/jpeg' }));
    return d;
  }, bytes);
  await page.dispatchEvent('[data-testid="drop-zone"]', 'dragenter', { dataTransfer: dt });
  await page.dispatchEvent('[data-testid="drop-zone"]', 'dragover', { dataTransfer: dt });
  await page.dispatchEvent('[data-testid="drop-zone"]', 'drop', { dataTransfer: dt });
  assert.equal((await resp).status(), 200);
  await resultsSettled(page);
  let ids = await resultIds(page);
  assert.equal(ids[0], 'sku-011', `first results: ${ids.slice(0, 5).join(', ')}`);

  // Photo + text: the multipart request carries both, and results still render.
  await page.evaluate(() => {
    window.__sent = [];
    const orig = FormData.prototype.append;
    FormData.prototype.append = function (name, value, ...rest) {
      window.__sent.push([name, typeof value === 'string' ? value : `<${value.constructor.name}>`]);
      return orig.call(this, name, value, ...rest);
    };
  });
  await page.fill('[data-testid="search-input"]', 'launch');
  const both = page.waitForResponse((r) => r.url().includes('/v1/search/image'));
  await page.click('[data-testid="search-button"]');
  assert.equal((await both).status(), 200);
  const sent = Object.fromEntries(await page.evaluate(() => window.__sent));
  assert.equal(sent.q, 'launch');
  assert.equal(sent.image, '<File>');
  await resultsSettled(page);
  ids = await resultIds(page);
  assert.ok(ids.includes('sku-011'), `photo + text lost sku-011: ${ids.join(', ')}`);
  await screenshot(page, '02-photo-drop-and-text');
  assertNoPageErrors(page);
  await page.context().close();
});

test('a text search finds the product by its title', async () => {
  const page = await newPage(browser);
  await page.goto(`${BASE}/`);
  const product = demoCatalog().find((p) => p.id === 'sku-013');
  const ids = await textSearch(page, product.title);
  assert.ok(ids.includes('sku-013'), `"${product.title}" → ${ids.join(', ')}`);
  const card = page.locator('[data-testid="result-card"][data-id="sku-013"]');
  assert.equal((await card.locator('[data-testid="result-title"]').textContent()).trim(), product.title);
  assert.match(await card.locator('[data-testid="result-price"]').textContent(), /29/);
  await page.locator('[data-testid="facet-category"] .chip').first().waitFor({ state: 'visible', timeout: 5_000 });
  await screenshot(page, '03-text-search');
  assertNoPageErrors(page);
  await page.context().close();
});

test('a result opens the detail panel, and "More like this" shows similar products', async () => {
  const page = await newPage(browser);
  await page.goto(`${BASE}/`);
  const ids = await textSearch(page, 'Tabby Cat Chelsea Poster');
  assert.ok(ids.includes('sku-007'), `sku-007 not found: ${ids.join(', ')}`);

  // Detail panel with the large image and the description.
  await page.click('[data-testid="result-card"][data-id="sku-007"] [data-testid="open-detail"]');
  await page.waitForSelector('[data-testid="product-detail"] [data-testid="detail-description"]');
  const product = demoCatalog().find((p) => p.id === 'sku-007');
  assert.equal((await page.textContent('[data-testid="detail-title"]')).trim(), product.title);
  assert.equal((await page.textContent('[data-testid="detail-description"]')).trim(), product.description);
  await page.waitForFunction(() => {
    const img = document.querySelector('[data-testid="detail-image"]');
    return img && img.complete && img.naturalWidth > 0;
  });
  await screenshot(page, '04-detail-panel');
  await page.keyboard.press('Escape');
  // Waits for the panel to close (a bare isVisible() would read it before the close ran).
  await page.locator('[data-testid="product-detail"]').waitFor({ state: 'hidden', timeout: 5_000 });

  // More like this from the card.
  const resp = page.waitForResponse((r) => r.url().includes('/v1/products/sku-007/similar'));
  await page.click('[data-testid="result-card"][data-id="sku-007"] [data-testid="more-like-this"]');
  assert.equal((await resp).status(), 200);
  await resultsSettled(page);
  const similar = await resultIds(page);
  assert.ok(similar.length > 0, 'no similar products');
  await page.locator('#similar-banner').waitFor({ state: 'visible', timeout: 5_000 });
  // The other cat products share sku-007's photo family.
  assert.ok(similar.some((id) => ['sku-008', 'sku-009', 'sku-010', 'sku-033'].includes(id)), `similar: ${similar.join(', ')}`);
  await screenshot(page, '05-more-like-this');
  assertNoPageErrors(page);
  await page.context().close();
});

test('facet chips and the price range filter the results', async () => {
  const page = await newPage(browser);
  await page.goto(`${BASE}/`);
  await textSearch(page, 'print poster');
  const chip = page.locator('[data-testid="facet-brand"] .chip', { hasText: 'Lumen & Co' });
  const resp = page.waitForRequest((r) => r.url().includes('/v1/search/text'));
  await chip.click();
  const body = JSON.parse((await resp).postData());
  assert.deepEqual(body.filters?.brand, ['Lumen & Co']);
  await resultsSettled(page);
  const brands = await page.$$eval('[data-testid="result-card"] .card-brand', (els) => els.map((e) => e.textContent));
  assert.ok(brands.length > 0, 'no results for the brand filter');
  assert.ok(brands.every((b) => b === 'Lumen & Co'), `brands: ${brands.join(', ')}`);
  assert.equal(await chip.getAttribute('aria-pressed'), 'true');

  await page.fill('[data-testid="price-max"]', '18');
  await page.click('[data-testid="price-apply"]');
  await resultsSettled(page);
  const prices = await page.$$eval('[data-testid="result-price"]', (els) => els.map((e) => Number(e.textContent.replace(/[^0-9.]/g, ''))));
  assert.ok(prices.length > 0, 'no results under the price cap');
  assert.ok(prices.every((p) => p <= 18), `prices: ${prices.join(', ')}`);
  await screenshot(page, '06-facets-and-price');
  assertNoPageErrors(page);
  await page.context().close();
});

test('a server error is shown with its message', async () => {
  const page = await newPage(browser);
  await page.goto(`${BASE}/`);
  const resp = page.waitForResponse((r) => r.url().includes('/v1/search/image'));
  await page.setInputFiles('[data-testid="photo-input"]', {
    name: 'broken.jpg', mimeType: 'image/jpeg', buffer: Buffer.from('this is not a JPEG at all'),
  });
  const r = await resp;
  assert.ok(r.status() >= 400 && r.status() < 500, `expected a 4xx for a broken image, got ${r.status()}`);
  const { error } = await r.json();
  await page.waitForSelector('[data-testid="error"]:visible');
  const text = await page.textContent('[data-testid="error"]');
  assert.ok(text.includes(error.message), `error box "${text}" lacks the server message "${error.message}"`);
  await eventually(async () => (await resultIds(page)).length === 0, { message: 'results cleared' });
  await screenshot(page, '07-error-state');
  await page.context().close();
});
