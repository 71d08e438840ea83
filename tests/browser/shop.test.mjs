// Shopper page (/): photo search, text search, detail panel, "more like this", facets, errors.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  BASE, DEMO, launchBrowser, newPage, screenshot, assertNoPageErrors, resultIds, resultsSettled, textSearch,
  eventually, demoCatalog, apiJson,
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
  await page.locator('[data-testid="facet-category"] .facet-option').first().waitFor({ state: 'visible', timeout: 5_000 });
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

test('facet checkboxes select several values, and the price range filters the results', async () => {
  const page = await newPage(browser);
  await page.goto(`${BASE}/`);
  await textSearch(page, 'print poster');
  const option = (kind, value) => page.locator(`[data-testid="facet-${kind}"] .facet-option[data-value="${value}"]`);
  const countOf = async (kind, value) => Number((await option(kind, value).locator('.count').textContent()).trim());
  const before = { print: await countOf('category', 'print'), poster: await countOf('category', 'poster') };
  let resp = page.waitForRequest((r) => r.url().includes('/v1/search/text'));
  await option('category', 'print').locator('input').check();
  assert.deepEqual(JSON.parse((await resp).postData()).filters?.category, ['print']);
  await resultsSettled(page);
  // The other values stay, with the counts they would add (the facet leaves out its own selection).
  assert.equal(await countOf('category', 'poster'), before.poster);
  resp = page.waitForRequest((r) => r.url().includes('/v1/search/text'));
  await option('category', 'poster').locator('input').check();
  assert.deepEqual(JSON.parse((await resp).postData()).filters?.category.sort(), ['poster', 'print']);
  await resultsSettled(page);
  const cats = await page.$$eval('[data-testid="result-card"]', (cards) => cards.length);
  assert.ok(cats > 0, 'no results for two categories');
  assert.equal(await page.locator('[data-testid="results-meta"], #results-meta').first().textContent().then((t) => Number(t.replace(/[^0-9].*$/, ''))),
    before.print + before.poster, 'OR within the facet: the total is both counts');
  assert.ok(await option('category', 'print').locator('input').isChecked());

  // Brands follow the categories; a brand narrows further (AND across facets).
  resp = page.waitForRequest((r) => r.url().includes('/v1/search/text'));
  await option('brand', 'Lumen & Co').locator('input').check();
  const body = JSON.parse((await resp).postData());
  assert.deepEqual(body.filters?.brand, ['Lumen & Co']);
  await resultsSettled(page);
  const brands = await page.$$eval('[data-testid="result-card"] .card-brand', (els) => els.map((e) => e.textContent));
  assert.ok(brands.length > 0 && brands.every((b) => b === 'Lumen & Co'), `brands: ${brands.join(', ')}`);
  await screenshot(page, 'shop-facets');

  await page.fill('[data-testid="price-max"]', '18');
  await page.click('[data-testid="price-apply"]');
  await resultsSettled(page);
  const prices = await page.$$eval('[data-testid="result-price"]', (els) => els.map((e) => Number(e.textContent.replace(/[^0-9.]/g, ''))));
  assert.ok(prices.length > 0, 'no results under the price cap');
  assert.ok(prices.every((p) => p <= 18), `prices: ${prices.join(', ')}`);
  assertNoPageErrors(page);
  await page.context().close();
});

test('results follow typing: debounced, stale answers never drawn over newer ones', async () => {
  const page = await newPage(browser);
  const sent = [];
  await page.route('**/v1/search/text', async (route) => {
    const q = JSON.parse(route.request().postData()).q;
    sent.push(q);
    // The first query answers late: its answer must not replace the newer one.
    if (q === 'cat') await new Promise((r) => setTimeout(r, 1500));
    try { await route.continue(); } catch { /* aborted by the page */ }
  });
  await page.goto(`${BASE}/`);
  await page.locator('[data-testid="search-input"]').pressSequentially('cat', { delay: 40 });
  await eventually(() => sent.includes('cat'), { message: 'the typed query was sent' });
  assert.deepEqual(sent, ['cat'], 'one request for a burst of typing');
  await page.locator('[data-testid="search-input"]').pressSequentially(' mug', { delay: 40 });
  await eventually(() => sent.includes('cat mug'), { message: 'the newer query was sent' });
  await resultsSettled(page);
  await new Promise((r) => setTimeout(r, 1800)); // past the slow answer
  assert.equal(await page.getAttribute('[data-testid="results"]', 'data-query'), 'cat mug');
  assert.match(await page.textContent('#results-title'), /cat mug/);
  assert.ok((await resultIds(page)).length > 0);
  assertNoPageErrors(page);
  await page.context().close();
});

test('matches are highlighted, and a hostile title stays text', async () => {
  const page = await newPage(browser);
  await page.goto(`${BASE}/`);
  await textSearch(page, 'galaxy mugs');
  const marks = await page.$$eval('[data-testid="result-card"][data-id="sku-014"] [data-testid="result-title"] mark', (m) => m.map((e) => e.textContent));
  assert.deepEqual(marks, ['Galaxies', 'Mug']);
  await screenshot(page, 'shop-highlights');

  const title = '<img src=x onerror="window.__xss=1"> Hostile <b>Bold</b> Mug';
  const put = await apiJson('/v1/products/xss-browser', { method: 'PUT', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ title, price: 5 }) });
  assert.equal(put.status, 200, JSON.stringify(put.body));
  try {
    await textSearch(page, 'hostile mug');
    const card = page.locator('[data-testid="result-card"][data-id="xss-browser"] [data-testid="result-title"]');
    assert.equal((await card.textContent()).trim(), title);
    assert.equal(await card.locator('img, b').count(), 0, 'markup in a title became elements');
    assert.deepEqual(await card.locator('mark').allTextContents(), ['Hostile', 'Mug']);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await page.evaluate(() => window.__xss), undefined, 'the title ran code');
  } finally {
    await apiJson('/v1/products/xss-browser', { method: 'DELETE' });
  }
  assertNoPageErrors(page);
  await page.context().close();
});

test('sort by price and page numbers', async () => {
  const page = await newPage(browser);
  await page.goto(`${BASE}/`);
  await textSearch(page, 'print poster mug');
  const resp = page.waitForRequest((r) => r.url().includes('/v1/search/text'));
  await page.selectOption('[data-testid="sort"]', 'price_asc');
  assert.equal(JSON.parse((await resp).postData()).sort, 'price_asc');
  await resultsSettled(page);
  const prices = await page.$$eval('[data-testid="result-price"]', (els) => els.map((e) => Number(e.textContent.replace(/[^0-9.]/g, ''))));
  assert.ok(prices.length > 1 && prices.every((p, i) => i === 0 || prices[i - 1] <= p), `prices: ${prices.join(', ')}`);
  const first = await resultIds(page);
  await page.locator('[data-testid="pager"] [data-testid="page"][data-page="2"]').waitFor({ state: 'visible' });
  await screenshot(page, 'shop-sort-and-pages');
  const p2 = page.waitForRequest((r) => r.url().includes('/v1/search/text'));
  await page.click('[data-testid="pager"] [data-testid="page"][data-page="2"]');
  const b2 = JSON.parse((await p2).postData());
  assert.equal(b2.offset, 20);
  assert.equal(b2.sort, 'price_asc');
  await resultsSettled(page);
  const second = await resultIds(page);
  assert.ok(second.length > 0 && second.every((id) => !first.includes(id)), 'page 2 repeats page 1');
  assert.equal(await page.getAttribute('[data-testid="page"][data-page="2"]', 'aria-current'), 'page');
  const lastOfFirst = prices[prices.length - 1];
  const prices2 = await page.$$eval('[data-testid="result-price"]', (els) => els.map((e) => Number(e.textContent.replace(/[^0-9.]/g, ''))));
  assert.ok(prices2.every((p) => p >= lastOfFirst), 'the order continues across pages');
  assert.match(page.url(), /page=2/);
  assertNoPageErrors(page);
  await page.context().close();
});

test('nothing above the relevance floor: the empty state offers the closest items, said as such', async () => {
  const page = await newPage(browser);
  // The served tiny model has no floor, so the answers to the typed query are made empty here, as
  // a floored index answers a query nothing matches (every one of them: typing may send more than
  // one request when the machine is slow); only the request that lifts the floor reaches the server.
  await page.route('**/v1/search/text', async (route) => {
    const fusion = JSON.parse(route.request().postData() || '{}').fusion;
    if (!(fusion && fusion.floor)) {
      await route.fulfill({ status: 200, contentType: 'application/json',
        body: JSON.stringify({ hits: [], total: 0, offset: 0, k: 20, generation: 1, exact: false, took_ms: 1, facets: { category: [], brand: [], price: [] } }) });
    } else {
      await route.continue();
    }
  });
  await page.goto(`${BASE}/`);
  await textSearch(page, 'xyzzy qwerty');
  await page.locator('[data-testid="empty-show-closest"]').waitFor({ state: 'visible' });
  const req = page.waitForRequest((r) => r.url().includes('/v1/search/text'));
  await page.click('[data-testid="empty-show-closest"]');
  const body = JSON.parse((await req).postData());
  assert.deepEqual(body.fusion, { floor: {} }, 'the second request turns the floor off');
  await resultsSettled(page);
  assert.ok((await resultIds(page)).length > 0, 'the closest items are shown');
  assert.match(await page.textContent('#results-meta'), /nearest items/);
  assertNoPageErrors(page);
  await page.context().close();
});

test('no results shows an empty state that offers a way out', async () => {
  const page = await newPage(browser);
  await page.goto(`${BASE}/`);
  await textSearch(page, 'poster');
  await page.fill('[data-testid="price-min"]', '5000');
  await page.click('[data-testid="price-apply"]');
  await resultsSettled(page);
  await page.locator('[data-testid="empty"]').waitFor({ state: 'visible' });
  assert.equal((await resultIds(page)).length, 0);
  assert.match(await page.textContent('[data-testid="empty"]'), /No results for “poster”/);
  await screenshot(page, 'shop-empty');
  await page.click('[data-testid="empty-clear-filters"]');
  await resultsSettled(page);
  assert.ok((await resultIds(page)).length > 0, 'clearing the filters brings results back');
  assert.ok(await page.isHidden('[data-testid="empty"]'));
  assertNoPageErrors(page);
  await page.context().close();
});

test('"More like this" keeps the filters, says what it is similar to, and clears the search box', async () => {
  const page = await newPage(browser);
  await page.goto(`${BASE}/`);
  await textSearch(page, 'cat');
  await page.locator('[data-testid="facet-category"] .facet-option[data-value="print"] input').check();
  await resultsSettled(page);
  const id = (await resultIds(page))[0];
  const resp = page.waitForResponse((r) => r.url().includes(`/v1/products/${id}/similar`));
  await page.click(`[data-testid="result-card"][data-id="${id}"] [data-testid="more-like-this"]`);
  const r = await resp;
  assert.equal(r.status(), 200);
  assert.match(r.url(), /category=print/);
  await resultsSettled(page);
  const cats = await page.$$eval('[data-testid="result-card"]', (c) => c.length);
  assert.ok(cats > 0);
  assert.equal(await page.inputValue('[data-testid="search-input"]'), '', 'the old query is gone from the box');
  await page.locator('[data-testid="similar-banner"]').waitFor({ state: 'visible' });
  assert.ok((await page.textContent('[data-testid="similar-banner"]')).includes('Similar to:'));
  assert.ok((await resultIds(page)).every((x) => x !== id));
  assert.ok(await page.locator('[data-testid="facet-category"] .facet-option[data-value="print"] input').isChecked());
  await screenshot(page, 'shop-more-like-this');
  await page.click('[data-testid="similar-clear"]');
  await page.locator('[data-testid="similar-banner"]').waitFor({ state: 'hidden' });
  assertNoPageErrors(page);
  await page.context().close();
});

test('a crop box on the photo narrows the search, by mouse and by keyboard', async () => {
  const page = await newPage(browser);
  await page.goto(`${BASE}/`);
  await photoSearch(page, path.join(DEMO, 'queries', 'sku-007.jpg'));
  const sent = [];
  await page.exposeFunction('__record', (v) => sent.push(v));
  await page.evaluate(() => {
    const orig = FormData.prototype.append;
    FormData.prototype.append = function (name, value, ...rest) {
      if (name === 'crop') window.__record(value);
      return orig.call(this, name, value, ...rest);
    };
  });
  const img = page.locator('#preview-img');
  await page.waitForFunction(() => document.querySelector('#preview-img').complete);
  const box = await img.boundingBox();
  let resp = page.waitForResponse((r) => r.url().includes('/v1/search/image'));
  await page.mouse.move(box.x + box.width * 0.1, box.y + box.height * 0.1);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.4, box.y + box.height * 0.5, { steps: 5 });
  await page.mouse.move(box.x + box.width * 0.6, box.y + box.height * 0.7, { steps: 5 });
  await page.mouse.up();
  assert.equal((await resp).status(), 200);
  await resultsSettled(page);
  const crop = JSON.parse(sent[sent.length - 1]);
  for (const [k, want] of [['x', 0.1], ['y', 0.1], ['w', 0.5], ['h', 0.6]]) {
    assert.ok(Math.abs(crop[k] - want) < 0.03, `crop ${k} ${crop[k]} (want ~${want})`);
  }
  assert.ok(await page.isVisible('[data-testid="crop-box"]'));
  await screenshot(page, 'shop-crop');
  // Keyboard: arrows move the box, Shift+arrows resize it; each change searches again.
  resp = page.waitForResponse((r) => r.url().includes('/v1/search/image'));
  await page.focus('[data-testid="crop-box"]');
  await page.keyboard.press('ArrowRight');
  await page.keyboard.press('Shift+ArrowDown');
  assert.equal((await resp).status(), 200);
  await resultsSettled(page);
  const moved = JSON.parse(sent[sent.length - 1]);
  assert.ok(moved.x > crop.x && Math.abs(moved.h - crop.h - 0.02) < 0.005, JSON.stringify(moved));
  // Back to the whole photo: no crop is sent.
  const n = sent.length;
  resp = page.waitForResponse((r) => r.url().includes('/v1/search/image'));
  await page.click('[data-testid="crop-reset"]');
  await resp;
  await resultsSettled(page);
  assert.equal(sent.length, n, 'a crop was sent after the reset');
  assert.equal((await resultIds(page))[0], 'sku-007');
  assertNoPageErrors(page);
  await page.context().close();
});

test('an image pasted from the clipboard searches', async () => {
  const page = await newPage(browser);
  await page.goto(`${BASE}/`);
  const bytes = fs.readFileSync(path.join(DEMO, 'queries', 'sku-011.jpg')).toString('base64');
  const resp = page.waitForResponse((r) => r.url().includes('/v1/search/image'));
  await page.evaluate((b64) => {
    const bin = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const d = new DataTransfer();
    d.items.add(new File([bin], 'image.png', { type: 'image/jpeg' }));
    document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: d, bubbles: true, cancelable: true }));
  }, bytes);
  assert.equal((await resp).status(), 200);
  await resultsSettled(page);
  assert.equal((await resultIds(page))[0], 'sku-011');
  assert.ok(await page.isVisible('#drop-preview img'));
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
