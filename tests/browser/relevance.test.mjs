// Admin dashboard, Relevance tab: defaults in force, a judged set run under settings A and B, wins and losses.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT, launchBrowser, newPage, screenshot, assertNoPageErrors, adminLogin, apiJson } from './helpers.mjs';

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

const JUDGED = [
  { id: 'a', q: 'astronaut', relevant: { 'sku-001': 2 } },
  { id: 'n', q: 'xyzzy qwerty', relevant: {} },
  // Never sent: the server does not read paths, so the page skips it and says so.
  { id: 'img', image: 'queries/sku-001.jpg', relevant: { 'sku-001': 2 } },
];
const FLOOR_B = { floor: { text: { image: 0.999, text: 0.999 } } };
const fmt3 = (v) => Number(v).toFixed(3);

test('the Relevance tab shows the defaults in force and compares two settings on a judged set', async () => {
  const page = await newPage(browser);
  await adminLogin(page);
  // The tab joins the tab list's keyboard order: End selects it, ArrowLeft goes back to Health.
  await page.focus('[data-testid="tab-overview"]');
  await page.keyboard.press('End');
  assert.equal(await page.getAttribute('[data-testid="tab-relevance"]', 'aria-selected'), 'true');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'tab-relevance');
  await page.keyboard.press('ArrowLeft');
  assert.equal(await page.getAttribute('[data-testid="tab-health"]', 'aria-selected'), 'true');
  await page.click('[data-testid="tab-relevance"]');
  assert.equal(await page.getAttribute('[data-testid="tab-relevance"]', 'aria-selected'), 'true');
  assert.equal(await page.isVisible('[data-testid="relevance"]'), true, 'panel shown');
  assert.equal(await page.isVisible('[data-testid="health"]'), false, 'health panel still shown');

  // Defaults table: one row per query kind, showing the service's own values.
  const { status, body: rel } = await apiJson('/v1/relevance');
  assert.equal(status, 200);
  await page.waitForSelector('[data-testid="relevance-defaults"] tbody tr');
  for (const kind of ['text', 'photo', 'photo_text']) {
    const cells = await page.$$eval(`[data-testid="relevance-defaults"] tr[data-kind="${kind}"] td`, (tds) => tds.map((t) => t.textContent));
    assert.equal(cells[0], rel.defaults[kind].mode, `${kind} mode`);
    assert.equal(cells[1], String(rel.defaults[kind].k), `${kind} k`);
    assert.equal(cells[3], rel.defaults[kind].normalization, `${kind} normalization`);
  }
  assert.match(await page.textContent('[data-testid="relevance-floor-source"]'), /Floor from: \S/);
  const tunedText = await page.textContent('[data-testid="relevance-tuned"]');
  if (rel.tuned) assert.match(tunedText, /Tuned/); else assert.match(tunedText, /Not tuned — run vitrine tune/);
  assert.match(await page.textContent('[data-testid="relevance-cache"]'), /hit rate/);

  // Paste the judged set: the image-path line is skipped with a note.
  await page.fill('[data-testid="relevance-jsonl"]', JUDGED.map((q) => JSON.stringify(q)).join('\n'));
  assert.match(await page.textContent('[data-testid="relevance-set-note"]'), /2 queries · 1 skipped/);

  // An invalid setting is caught before anything is sent.
  await page.fill('[data-testid="relevance-fusion-b"]', '{"floor": ');
  assert.match(await page.textContent('#rel-fusion-b-msg'), /Invalid/);
  let evalCalls = 0;
  page.on('request', (r) => { if (r.url().endsWith('/v1/eval')) evalCalls++; });
  await page.click('[data-testid="relevance-run"]');
  await page.waitForSelector('[data-testid="relevance-error"]:visible');
  assert.match(await page.textContent('[data-testid="relevance-error"]'), /Setting B/);
  assert.equal(evalCalls, 0, 'an invalid setting was sent');

  // A: service defaults; B: a floor no text query passes.
  await page.fill('[data-testid="relevance-fusion-b"]', JSON.stringify(FLOOR_B));
  const respP = page.waitForResponse((r) => r.url().endsWith('/v1/eval') && r.request().method() === 'POST');
  await page.click('[data-testid="relevance-run"]');
  const resp = await respP;
  assert.equal(resp.status(), 200);
  const sent = resp.request().postDataJSON();
  assert.deepEqual(sent.queries.map((q) => q.id), ['a', 'n'], 'the image-path query was sent');
  assert.deepEqual(sent.fusions, [null, FLOOR_B]);
  const { runs } = await resp.json();
  await page.waitForSelector('[data-testid="relevance-results"][aria-busy="false"] [data-testid="relevance-metrics"]');

  // The metrics table shows the numbers of this response, A and B side by side.
  for (const [i, run] of [[0, 'a'], [1, 'b']]) {
    for (const m of ['recall@1', 'recall@10', 'mrr', 'ndcg@10']) {
      const shown = await page.textContent(`[data-testid="relevance-metrics"] tr[data-row="fused"] td[data-metric="${m}"][data-run="${run}"]`);
      assert.equal(shown, fmt3(runs[i].fused[m]), `fused ${m} of ${run}`);
      const img = await page.textContent(`[data-testid="relevance-metrics"] tr[data-row="image"] td[data-metric="${m}"][data-run="${run}"]`);
      assert.equal(img, fmt3(runs[i].channels.image[m]), `image ${m} of ${run}`);
    }
  }

  // Wins and losses: "n" gets hits under A and none under B (the floor removes every vector hit, and
  // no keyword matches), and the page says so in words.
  const n = (r) => r.per_query.find((q) => q.id === 'n');
  assert.ok(n(runs[0]).hits > 0, `A should return hits for "n": ${JSON.stringify(n(runs[0]))}`);
  assert.equal(n(runs[1]).hits, 0, 'B should return nothing for "n"');
  const nItem = page.locator('[data-testid="relevance-wins-losses"] li[data-id="n"]');
  const hitsA = n(runs[0]).hits;
  assert.equal((await nItem.textContent()).replace(/\s+/g, ' ').trim(),
    `No-match n “xyzzy qwerty”: B returns nothing, A returns ${hitsA} result${hitsA === 1 ? '' : 's'}.`);
  assert.equal(await nItem.getAttribute('data-kind'), 'hits');

  await page.evaluate(() => window.scrollTo(0, 0)); // the sticky top bar would show mid-page in a full-page shot
  const dir = path.join(ROOT, 'docs', 'screenshots');
  fs.mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: path.join(dir, 'admin-relevance.png'), fullPage: true });

  // Phone width: the wide tables scroll in their own wrapper, the page does not.
  await page.setViewportSize({ width: 390, height: 844 });
  const widths = await page.evaluate(() => ({
    page: document.documentElement.scrollWidth,
    wrap: document.querySelector('[data-testid="relevance-metrics"]').parentElement.clientWidth,
    table: document.querySelector('[data-testid="relevance-metrics"]').scrollWidth,
  }));
  assert.ok(widths.page <= 390, `the page scrolls sideways at 390 px: ${JSON.stringify(widths)}`);
  assert.ok(widths.table > widths.wrap, `the metrics table should scroll in its wrapper: ${JSON.stringify(widths)}`);
  await screenshot(page, '40-admin-relevance-phone');

  // Sign-out forgets what was shown.
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.click('[data-testid="logout"]');
  assert.equal(await page.locator('[data-testid="relevance-metrics"]').count(), 0, 'metrics left in the DOM after sign-out');
  assertNoPageErrors(page);
  await page.context().close();
});

test('the Relevance tab shows the API error of a rejected run', async () => {
  const page = await newPage(browser);
  await adminLogin(page);
  await page.click('[data-testid="tab-relevance"]');
  await page.fill('[data-testid="relevance-jsonl"]', JSON.stringify({ id: 'a', q: 'astronaut', relevant: { 'sku-001': 2 } }));
  // A weight the server refuses (negative): its {error: {code, message}} is shown.
  await page.fill('[data-testid="relevance-fusion-a"]', '{"mode": "weighted", "weights": {"image": -1, "text": 1, "keyword": 1}}');
  const respP = page.waitForResponse((r) => r.url().endsWith('/v1/eval'));
  await page.click('[data-testid="relevance-run"]');
  const resp = await respP;
  assert.equal(resp.status(), 400);
  const { error } = await resp.json();
  await page.waitForSelector('[data-testid="relevance-error"]:visible');
  assert.equal(await page.textContent('[data-testid="relevance-error"]'), `${error.message} (${error.code})`);
  assert.equal(await page.isEnabled('[data-testid="relevance-run"]'), true, 'the run button stays busy');
  assertNoPageErrors(page);
  await page.context().close();
});
