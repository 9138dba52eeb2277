// The web console end to end: the real `ferry serve` (started by scripts/test-ui.sh),
// Debian's Chromium driven by playwright-core, and assertions on what the pages show
// and on what the API says after acting on the pages.
//
//   FERRY_URL        the server's HTTP address (http://127.0.0.1:port)
//   FERRY_KAFKA      its Kafka address (for a consumer group made with kcat; optional)
//   SCREENSHOT_DIR   where the screenshots of each page go
//   CHROMIUM         the browser (default /usr/bin/chromium)
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const BASE = process.env.FERRY_URL;
const KAFKA = process.env.FERRY_KAFKA || '';
const SHOTS = process.env.SCREENSHOT_DIR || mkdtempSync(path.join(tmpdir(), 'ferry-console-shots-'));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
// Chromium must not reach for the network (this machine may have none) or stall.
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
/** How long the page may take to show what the API changed: a few refreshes. */
const LIVE_MS = 8000;

assert.ok(BASE, 'FERRY_URL is set (scripts/test-ui.sh starts the server)');
mkdirSync(SHOTS, { recursive: true });

async function call(method, route, body) {
  const response = await fetch(BASE + route, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new Error(`${method} ${route}: ${response.status} ${text}`);
  return data;
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

async function eventually(what, check, timeoutMs = LIVE_MS) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
      last = v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${last}`);
    await sleep(100);
  }
}

let stepStarted = Date.now();
function step(name) {
  const now = Date.now();
  console.log(`  ok (${now - stepStarted} ms)`);
  console.log(`- ${name}`);
  stepStarted = now;
}

/** A webhook endpoint: 200 for every request, except a first 503 for the "flaky" record. */
function startEndpoint() {
  const seen = new Set();
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => {
      const flaky = body.includes('flaky') && !seen.has('flaky');
      if (flaky) seen.add('flaky');
      res.writeHead(flaky ? 503 : 200, { 'content-type': 'text/plain' });
      res.end(flaky ? 'busy, try later' : 'ok');
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

async function setUp(endpointUrl) {
  await call('POST', '/v1/topics', { name: 'orders', partitions: 3 });
  await call('POST', '/v1/topics', { name: 'audit', partitions: 1 });
  await call('POST', '/v1/topics', { name: 'jobs', partitions: 2 });
  await call('POST', '/v1/topics', { name: 'clicks', partitions: 2 });
  const produced = await call('POST', '/v1/topics/orders/records', {
    records: [
      { key: 'customer-7', value: { order: 1041, item: 'green tea', total: 12.5 } },
      { key: 'customer-42', value: { order: 1042, item: 'espresso beans', total: 18.9, gift: false }, headers: { source: 'web', 'trace-id': 'abc123' } },
      { key: 'binary', value: { base64: '3q2+7w==' }, headers: { 'content-type': 'application/octet-stream' } },
      { key: '<b>bold</b>', value: '<img src=x onerror="window.__pwned=1">', headers: { '<i>h</i>': '<script>window.__pwned=2</script>' } },
      { key: 'flaky', value: { order: 1043, item: 'filters', note: 'flaky' } },
      ...Array.from({ length: 7 }, (_, i) => ({ key: `customer-${100 + i}`, value: { order: 1100 + i, item: 'mugs' } })),
    ],
  });
  const base = Date.UTC(2026, 0, 1, 9, 0, 0);
  await call('POST', '/v1/topics/audit/records', {
    records: Array.from({ length: 20 }, (_, i) => ({ key: `timed-${i}`, value: { minute: i }, timestamp: base + i * 60000 })),
  });
  await call('POST', '/v1/topics/jobs/records', {
    records: Array.from({ length: 40 }, (_, i) => ({ key: `job-${i}`, value: { job: i } })),
  });
  await call('POST', '/v1/subscriptions', { name: 'billing', topic: 'orders', start: 'earliest', max_deliveries: 1 });
  await call('POST', '/v1/subscriptions', {
    name: 'orders-hook', topic: 'orders', start: 'earliest',
    push: { url: endpointUrl, timeout_ms: 2000 },
    retry: { strategy: 'fixed', delay_ms: 200 },
  });
  await call('POST', '/v1/subscriptions', { name: 'work', topic: 'jobs', start: 'earliest' });
  // A dead letter: billing gives up on a record after one delivery.
  const { records } = await call('POST', '/v1/subscriptions/billing/pull', { max_records: 1 });
  assert.equal(records.length, 1);
  await call('POST', '/v1/subscriptions/billing/nack', { lease_ids: [records[0].lease_id], error: 'card declined' });
  await eventually('the dead letter', async () => (await call('GET', '/v1/subscriptions/billing')).dead_lettered === 1);
  let log = [];
  await eventually('the push deliveries', async () => {
    log = (await call('GET', '/v1/subscriptions/orders-hook/deliveries')).deliveries;
    return log.length >= 13;
  }).catch((e) => { throw new Error(`${e.message}; the log: ${JSON.stringify(log).slice(0, 800)}`); });
  const customer42 = produced.offsets[1];
  return { customer42, deadLetter: records[0] };
}

/** Produces to `clicks` now and then, so that the overview has throughput to show. */
function startTraffic() {
  let stop = false;
  const done = (async () => {
    let i = 0;
    while (!stop) {
      const n = Math.round(8 + 30 * (1 + Math.sin(i / 5)));
      await call('POST', '/v1/topics/clicks/records', { records: Array.from({ length: n }, (_, j) => ({ value: { click: i, j } })) });
      i += 1;
      await sleep(150);
    }
  })();
  return async () => {
    stop = true;
    await done;
  };
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

/** The number a stat card shows. */
async function statNumber(page, name) {
  const text = await page.locator(`[data-stat="${name}"] .stat-value`).innerText();
  return Number(text.replace(/[^0-9.]/g, ''));
}

async function main() {
  const started = Date.now();
  const endpoint = await startEndpoint();
  const endpointUrl = `http://127.0.0.1:${endpoint.address().port}/hook`;
  console.log('- set up topics, records and subscriptions over the API');
  const { customer42 } = await setUp(endpointUrl);

  const profile = mkdtempSync(path.join(tmpdir(), 'ferry-console-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1440, height: 900 },
    timezoneId: 'UTC',
    locale: 'en-US',
  });
  const page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(10000);
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console error: ${m.text()}`); });
  let loads = 0;
  page.on('load', () => { loads += 1; });
  let kcat = null;

  try {
    step('overview: health and throughput, measured live');
    const stopTraffic = startTraffic();
    const answer = await page.goto(`${BASE}/ui/`);
    assert.match(answer.headers()['content-security-policy'], /default-src 'self'/);
    await page.locator('[data-stat="health"] .stat-value').filter({ hasText: 'Ready' }).waitFor();
    await eventually('a throughput above 0', async () => (await statNumber(page, 'throughput')) > 0);
    await page.locator('.chart-svg').waitFor();
    await sleep(6000); // more readings, for the chart
    await stopTraffic();
    const topicCount = (await call('GET', '/v1/topics')).topics.length;
    assert.equal(await statNumber(page, 'topics'), topicCount);
    await shot(page, 'overview');

    step('topics: the list, then a record found by offset');
    await page.getByRole('link', { name: 'Topics', exact: true }).click();
    await page.locator('table tbody tr', { hasText: 'orders' }).first().waitFor();
    await shot(page, 'topics');
    await page.getByRole('link', { name: 'orders', exact: true }).click();
    await page.locator('h1', { hasText: 'orders' }).waitFor();
    await page.getByLabel('Partition').selectOption(String(customer42.partition));
    await page.getByLabel('Read from').selectOption('offset');
    await page.getByLabel('Offset', { exact: true }).fill(String(customer42.offset));
    await page.getByRole('button', { name: 'Read' }).click();
    const first = page.locator('table.records tbody tr').first();
    await first.filter({ hasText: 'customer-42' }).waitFor();
    assert.equal(await first.getAttribute('data-offset'), String(customer42.offset));
    await first.click();
    const detail = page.locator('.record-detail');
    await detail.waitFor();
    assert.equal(await detail.locator('.record-key').innerText(), 'customer-42');
    const json = await detail.locator('pre.json').innerText();
    assert.deepEqual(JSON.parse(json), { order: 1042, item: 'espresso beans', total: 18.9, gift: false }, 'the value as pretty JSON');
    assert.ok(json.includes('\n  "item": "espresso beans"'), `pretty-printed: ${json}`);
    await detail.locator('tr', { hasText: 'trace-id' }).filter({ hasText: 'abc123' }).waitFor();

    step('topics: records found by key and value, bytes in hex, hostile text shown as text');
    await page.getByLabel('Partition').selectOption('0');
    await page.getByLabel('Read from').selectOption('newest');
    const all = [];
    for (const p of ['0', '1', '2']) {
      await page.getByLabel('Partition').selectOption(p);
      await page.getByRole('button', { name: 'Read' }).click();
      await page.locator('.browser-status', { hasText: `Partition ${p}` }).waitFor();
      all.push(...await page.locator('table.records tbody tr').allInnerTexts());
      const hostile = page.locator('table.records tbody tr', { hasText: '<b>bold</b>' });
      if (await hostile.count()) {
        await hostile.click();
        await page.locator('.record-detail pre.json', { hasText: '<img src=x onerror=' }).waitFor();
        await page.locator('.record-detail td', { hasText: '<script>window.__pwned=2</script>' }).waitFor();
      }
      const binary = page.locator('table.records tbody tr', { hasText: 'binary' });
      if (await binary.count()) {
        await binary.click();
        const hex = await page.locator('.record-detail pre.hex').innerText();
        assert.match(hex, /^00000000 {2}de ad be ef/, 'bytes as a hex dump');
        await page.getByRole('button', { name: 'Base64' }).click();
        assert.equal(await page.locator('.record-detail pre.hex').innerText(), '3q2+7w==');
      }
    }
    assert.equal(all.filter((t) => t.includes('customer-')).length, 9, `every customer record: ${all}`);
    assert.equal(await page.evaluate(() => window.__pwned), undefined, 'no record content ran as code');
    assert.equal(await page.locator('img[src="x"]').count(), 0, 'no record content became markup');
    await page.getByLabel('Partition').selectOption(String(customer42.partition));
    await page.getByRole('button', { name: 'Read' }).click();
    await page.getByLabel('Find').fill('espresso');
    await eventually('one record matching "espresso"', async () => (await page.locator('table.records tbody tr').count()) === 1
      && (await page.locator('table.records tbody tr').innerText()).includes('customer-42'));
    await page.locator('table.records tbody tr').click();
    await shot(page, 'topic-records');

    step('topics: a record found by time');
    await page.goto(`${BASE}/ui/#/topics/audit`);
    await page.getByLabel('Read from').selectOption('time');
    await page.getByLabel('Time').fill('2026-01-01T09:05:30');
    await page.getByRole('button', { name: 'Read' }).click();
    const firstTimed = page.locator('table.records tbody tr').first();
    await firstTimed.filter({ hasText: 'timed-6' }).waitFor();
    assert.equal(await firstTimed.getAttribute('data-offset'), '6', 'the first record at or after 09:05:30');

    step('subscriptions: the list');
    await page.getByRole('link', { name: 'Subscriptions', exact: true }).click();
    await page.locator('tr[data-subscription="orders-hook"]').waitFor();
    await shot(page, 'subscriptions');

    step('a dead letter, seen and redriven');
    await page.goto(`${BASE}/ui/#/subscriptions/billing`);
    const letter = page.locator('table.dead-letter-list tbody tr', { hasText: 'card declined' });
    await letter.waitFor();
    assert.equal(await statNumber(page, 'dead-lettered'), 1);
    await letter.click();
    await page.locator('.record-detail tr', { hasText: 'ferry-origin-subscription' }).filter({ hasText: 'billing' }).waitFor();
    await shot(page, 'subscription-queue');
    await page.getByRole('button', { name: 'Redrive all' }).click();
    await page.locator('.notice', { hasText: '1 dead letter(s) sent back' }).waitFor();
    const pulled = await call('POST', '/v1/subscriptions/billing/pull', { max_records: 100 });
    const redriven = pulled.records.filter((r) => r.headers['ferry-redrive-subscription'] === 'billing');
    assert.equal(redriven.length, 1, 'the redriven record is delivered to billing again');
    assert.equal(redriven[0].attempt, 1);

    step('a push subscription: breaker, delivery log, pause from the page');
    await page.goto(`${BASE}/ui/#/subscriptions/orders-hook`);
    await page.locator('[data-breaker="closed"]').first().waitFor();
    await page.locator('table.deliveries tbody tr', { hasText: 'retry' }).filter({ hasText: '503' }).waitFor();
    await eventually('every record delivered', async () => (await page.locator('table.deliveries tbody tr', { hasText: 'delivered' }).count()) >= 12);
    await shot(page, 'subscription-push');
    const retryRow = page.locator('table.deliveries tbody tr', { hasText: 'delivered' }).first();
    await retryRow.getByRole('button', { name: 'Retry' }).click();
    await page.locator('.notice', { hasText: 'will be delivered again' }).waitFor();
    assert.equal((await call('GET', '/v1/subscriptions/orders-hook')).paused, false);
    await page.getByRole('button', { name: 'Pause' }).click();
    await page.locator('.notice', { hasText: 'orders-hook paused.' }).waitFor();
    assert.equal((await call('GET', '/v1/subscriptions/orders-hook')).paused, true, 'paused over the API');
    await page.locator('[data-state="paused"]').first().waitFor();
    await page.getByRole('button', { name: 'Resume' }).waitFor();

    step('a backlog falls while the page watches');
    await page.goto(`${BASE}/ui/#/subscriptions/work`);
    const loadsBefore = loads;
    await eventually('backlog 40', async () => (await statNumber(page, 'backlog')) === 40);
    const shown = [40];
    for (const expected of [30, 20, 10, 0]) {
      const { records } = await call('POST', '/v1/subscriptions/work/pull', { max_records: 10 });
      assert.equal(records.length, 10);
      await call('POST', '/v1/subscriptions/work/ack', { lease_ids: records.map((r) => r.lease_id) });
      await eventually(`backlog ${expected} on the page`, async () => (await statNumber(page, 'backlog')) === expected);
      shown.push(expected);
    }
    assert.deepEqual(shown, [40, 30, 20, 10, 0]);
    assert.equal(await page.locator('[data-stat="oldest"] .stat-value').innerText(), '—');
    assert.equal(loads, loadsBefore, 'the page updated without reloading');

    step('seek and purge from the page');
    await page.getByRole('button', { name: 'Seek\u2026' }).click();
    await page.getByLabel('Position').selectOption('earliest');
    await page.locator('dialog').getByRole('button', { name: 'Seek' }).click();
    await page.locator('.notice', { hasText: 'work moved.' }).waitFor();
    await eventually('backlog 40 again on the page', async () => (await statNumber(page, 'backlog')) === 40);
    assert.equal((await call('GET', '/v1/subscriptions/work')).backlog, 40, 'sought back over the API');
    await page.getByRole('button', { name: 'Purge\u2026' }).click();
    await page.locator('dialog').getByRole('button', { name: 'Purge' }).click();
    await page.locator('.notice', { hasText: 'work purged.' }).waitFor();
    assert.equal((await call('GET', '/v1/subscriptions/work')).backlog, 0, 'purged over the API');
    await eventually('backlog 0 on the page', async () => (await statNumber(page, 'backlog')) === 0);
    assert.equal(await page.locator('dialog').count(), 0, 'the dialogs are gone');

    if (KAFKA) {
      step('consumer groups: a kcat member, its assignment and lag');
      kcat = spawn('kcat', ['-b', KAFKA, '-G', 'order-audit', '-q', '-X', 'auto.offset.reset=earliest',
        '-X', 'auto.commit.interval.ms=200', '-X', 'client.id=order-audit-1', 'orders'], { stdio: 'ignore' });
      await page.goto(`${BASE}/ui/#/groups`);
      await page.locator('tr[data-group="order-audit"]', { hasText: 'Stable' }).waitFor({ timeout: 20000 });
      await shot(page, 'groups');
      await page.getByRole('link', { name: 'order-audit' }).click();
      await page.locator('td', { hasText: 'orders: 0, 1, 2' }).waitFor();
      await eventually('every partition committed', async () => (await page.locator('tr[data-topic="orders"]', { hasText: '—' }).count()) === 0
        && (await page.locator('tr[data-topic="orders"]').count()) === 3);
      await shot(page, 'group');
      kcat.kill('SIGTERM');
      await new Promise((resolve) => { kcat.on('exit', resolve); });
      kcat = null;
      const before = (await call('GET', '/v1/groups/order-audit')).lag;
      await call('POST', '/v1/topics/orders/records', { records: Array.from({ length: 5 }, (_, i) => ({ key: 'late', value: i })) });
      await eventually(`lag ${before + 5} on the page`, async () => (await statNumber(page, 'lag')) === before + 5);
    } else {
      console.log('  (FERRY_KAFKA not set: consumer groups skipped)');
    }
    step('no errors in the page');
    assert.deepEqual(problems, []);
    console.log(`  ok\nconsole test passed in ${((Date.now() - started) / 1000).toFixed(1)} s; screenshots in ${SHOTS}`);
  } finally {
    if (kcat) kcat.kill('SIGKILL');
    await context.close();
    endpoint.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`\nFAILED: ${e.stack || e}`);
  process.exit(1);
});
