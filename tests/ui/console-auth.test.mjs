// The web console on a server with authentication on (`ferry serve --auth`): the
// browser authenticates with HTTP Basic when the API asks (here Playwright answers the
// browser's prompt), and the console shows only what that user's ACLs let it describe.
//
//   FERRY_URL          the server's HTTP address (started by scripts/test-ui.sh with --auth)
//   FERRY_ADMIN        the super user's name and password, as user:password
//   CHROMIUM           the browser (default /usr/bin/chromium)
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const BASE = process.env.FERRY_URL;
const ADMIN = process.env.FERRY_ADMIN;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
assert.ok(BASE && ADMIN, 'FERRY_URL and FERRY_ADMIN are set (scripts/test-ui.sh)');

async function call(method, route, body, credentials = ADMIN) {
  const headers = { authorization: `Basic ${Buffer.from(credentials).toString('base64')}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(BASE + route, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  return { status: response.status, data: text ? JSON.parse(text) : null };
}

async function must(method, route, body) {
  const r = await call(method, route, body);
  if (r.status >= 300) throw new Error(`${method} ${route}: ${r.status} ${JSON.stringify(r.data)}`);
  return r.data;
}

async function browse(credentials, check) {
  const profile = mkdtempSync(path.join(tmpdir(), 'ferry-console-auth-'));
  const options = { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1280, height: 800 } };
  if (credentials) options.httpCredentials = credentials;
  const context = await chromium.launchPersistentContext(profile, options);
  try {
    const page = context.pages()[0] || await context.newPage();
    page.setDefaultTimeout(10000);
    await check(page);
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

async function main() {
  // Without credentials the API refuses, with a challenge the browser can answer.
  const anonymous = await fetch(`${BASE}/v1/topics`);
  assert.equal(anonymous.status, 401);
  assert.match(anonymous.headers.get('www-authenticate'), /Basic/);

  await must('POST', '/v1/users', { name: 'viewer', password: 'viewer-pw' });
  await must('POST', '/v1/topics', { name: 'shipments', partitions: 1 });
  await must('POST', '/v1/topics', { name: 'salaries', partitions: 1 });
  await must('POST', '/v1/acls', { acls: [{ principal: 'User:viewer', resource_type: 'topic', resource_name: 'shipments', operation: 'read' }] });
  await must('POST', '/v1/topics/shipments/records', { records: [{ key: 'parcel-7', value: { state: 'out for delivery' } }] });

  console.log('- the console as viewer: only the topic its ACLs allow, and its records');
  await browse({ username: 'viewer', password: 'viewer-pw' }, async (page) => {
    await page.goto(`${BASE}/ui/#/topics`);
    await page.locator('table tbody tr', { hasText: 'shipments' }).first().waitFor();
    assert.equal(await page.locator('table tbody tr', { hasText: 'salaries' }).count(), 0);
    await page.getByRole('link', { name: 'shipments', exact: true }).click();
    await page.getByRole('button', { name: 'Read' }).click();
    await page.locator('text=parcel-7').first().waitFor();
  });

  console.log('- the console as the super user: every topic');
  const [user, password] = ADMIN.split(':');
  await browse({ username: user, password }, async (page) => {
    await page.goto(`${BASE}/ui/#/topics`);
    await page.locator('table tbody tr', { hasText: 'salaries' }).first().waitFor();
    await page.locator('table tbody tr', { hasText: 'shipments' }).first().waitFor();
  });
  console.log('console with authentication: ok');
}

main().catch((e) => { console.error(e); process.exit(1); });
