// The admin dashboard (/ui) in a real browser: the real hookd binary, the seed's Express
// receiver, Debian's chromium. The steps run in order on one hookd; each creates through the
// JSON API whatever it needs that an earlier step may have failed to make.
//
// Run: node --test tests/browser/   (HOOKD_BIN picks the binary; HOOKD_SCREENSHOTS=1 writes
// docs/img/dashboard-*.png)

import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';

import {
  ADMIN_TOKEN,
  INGEST_TOKEN,
  RECEIVER_SECRET,
  adminContext,
  field,
  freePort,
  h1,
  jobEvent,
  mainText,
  newContext,
  notice,
  reloadUntil,
  screenshot,
  seriousA11yViolations,
  signIn,
  stackProcesses,
  startReceiver,
  startStack,
  stopStack,
  table,
  waitFor,
  withLogs,
} from './support.mjs';

// The contract's Content-Security-Policy, directive by directive (a `script-src 'none'` beside
// them is allowed: `default-src 'none'` already forbids scripts).
const CSP = {
  'default-src': "'none'",
  'style-src': "'self'",
  'img-src': "'self'",
  'form-action': "'self'",
  'base-uri': "'none'",
  'frame-ancestors': "'none'",
};
const DELIVERY_URL = /\/ui\/deliveries\/(dlv_[^/?#]+)(?:[?#]|$)/;
const DELIVERY_COLUMNS = ['Delivery', 'Event type', 'Subscription', 'State', 'Attempts', 'Created', 'Last error'];
const ATTEMPT_COLUMNS = ['Attempt', 'Started', 'Status', 'Duration', 'Outcome', 'Error', 'Response excerpt'];

/** A CSP header as {directive: value}, without a `script-src 'none'`. */
function cspDirectives(header = '') {
  const out = {};
  for (const part of header.split(';').map((p) => p.trim()).filter(Boolean)) {
    const [name, ...values] = part.split(/\s+/);
    out[name] = values.join(' ');
  }
  if (out['script-src'] === "'none'") delete out['script-src'];
  return out;
}

describe('admin dashboard', () => {
  const stack = {}; // receiver, hookd, browser, others: see startStack
  let hookd;
  let receiver;
  let browser;
  let admin; // { context, page }: signed in by the first step
  const ids = {}; // what the steps made: testDelivery, completedEvent, ...
  const step = (name, fn) => it(name, { timeout: 60_000 }, withLogs(() => stackProcesses(stack), fn));

  before(async () => {
    await startStack(stack);
    ({ hookd, receiver, browser } = stack);
  }, { timeout: 60_000 });

  after(() => stopStack(stack));

  /** The admin page, signing a new context in when the first step did not. */
  async function adminPage() {
    if (!admin) admin = await adminContext(browser, hookd.base);
    return admin.page;
  }

  /** Creates a subscription through the JSON API unless it exists; returns it. */
  async function ensureSubscription(body) {
    const existing = await hookd.api('GET', `/v1/subscriptions/${body.id}`);
    if (existing.status === 200) return existing.body;
    const created = await hookd.api('POST', '/v1/subscriptions', { secret: RECEIVER_SECRET, ...body });
    assert.equal(created.status, 201, `POST /v1/subscriptions ${JSON.stringify(body)}: ${JSON.stringify(created.body)}`);
    return created.body;
  }

  const uiSub = () =>
    ensureSubscription({ id: 'ui-sub', url: receiver.url, events: ['job.completed', 'job.failed'] });

  /** A delivered-or-not job.test delivery of ui-sub: the one "Send test event" made, or a new one. */
  async function testDelivery() {
    await uiSub();
    if (!ids.testDelivery) {
      const sent = await hookd.api('POST', '/v1/subscriptions/ui-sub/test');
      assert.equal(sent.status, 202, JSON.stringify(sent.body));
      ids.testDelivery = sent.body.delivery_id;
    }
    return ids.testDelivery;
  }

  /** Clicks `button` and returns the response of the POST it submits. */
  async function submit(page, button) {
    const [response] = await Promise.all([
      page.waitForResponse((r) => r.request().method() === 'POST' && r.request().isNavigationRequest()),
      button.click(),
    ]);
    await page.waitForLoadState();
    return response;
  }

  /** The state of delivery `id` in the deliveries list filtered by `query`. */
  async function listedState(page, id, query) {
    await page.goto(`${hookd.base}/ui/deliveries?${query}`);
    const rows = await table(page, DELIVERY_COLUMNS, { orNone: true });
    return rows.find((r) => r.Delivery === id);
  }

  step('sign-in: pages redirect to it, wrong and non-admin tokens are refused, the admin token signs in', async () => {
    const context = await newContext(browser);
    const page = await context.newPage();

    const anonymous = await context.request.get(`${hookd.base}/ui/deliveries`, { maxRedirects: 0 });
    assert.equal(anonymous.status(), 303, 'GET /ui/deliveries without a session');
    assert.match(anonymous.headers().location ?? '', /\/ui\/login$/);

    await page.goto(`${hookd.base}/ui`);
    assert.equal(new URL(page.url()).pathname, '/ui/login', 'GET /ui without a session lands on the sign-in page');
    const token = await field(page, 'Admin token', 'token');
    assert.equal(await token.getAttribute('type'), 'password');
    assert.equal(await token.getAttribute('id'), 'token');

    for (const wrong of ['not-a-token', INGEST_TOKEN]) {
      await page.getByLabel('Admin token').fill(wrong);
      const response = await submit(page, page.getByRole('button', { name: 'Sign in', exact: true }));
      assert.equal(response.status(), 401, `POST /ui/login with ${wrong === INGEST_TOKEN ? 'the ingest-only token' : 'a wrong token'}`);
      assert.match(await page.content(), /not an admin token/i);
      assert.equal(
        (await context.cookies()).filter((c) => c.name === 'hookd_session').length,
        0,
        'no session cookie after a refused token',
      );
    }

    await signIn(page, hookd.base, ADMIN_TOKEN);
    assert.equal(new URL(page.url()).pathname, '/ui', 'the sign-in redirects to /ui');
    assert.equal(await h1(page), 'Overview');
    const cookie = (await context.cookies()).find((c) => c.name === 'hookd_session');
    assert.ok(cookie, 'a hookd_session cookie is set');
    assert.equal(cookie.httpOnly, true, 'hookd_session is HttpOnly');
    assert.equal(cookie.sameSite, 'Strict', 'hookd_session is SameSite=Strict');
    assert.equal(cookie.path, '/ui', 'hookd_session has Path=/ui');
    assert.ok(cookie.expires > Date.now() / 1000, 'hookd_session has Max-Age');

    const nav = page.locator('nav');
    for (const [name, href] of [
      ['Overview', '/ui'],
      ['Deliveries', '/ui/deliveries'],
      ['Subscriptions', '/ui/subscriptions'],
    ]) {
      assert.equal(await nav.getByRole('link', { name, exact: true }).getAttribute('href'), href, `nav link ${name}`);
    }
    assert.equal(await page.getByRole('button', { name: 'Sign out', exact: true }).count(), 1, 'a Sign out button');
    assert.equal(await page.locator('main').count(), 1, 'one <main>');
    admin = { context, page };
  });

  step('New subscription form: validation errors, then a subscription to the Express receiver, its secret shown once', async () => {
    const page = await adminPage();
    await page.goto(`${hookd.base}/ui/subscriptions`);
    assert.equal(await h1(page), 'Subscriptions');
    await page.getByRole('link', { name: 'New subscription', exact: true }).click();
    await page.waitForURL(/\/ui\/subscriptions\/new$/);
    assert.equal(await h1(page), 'New subscription');

    const form = page.locator('form').filter({ has: page.locator('input[name="url"]') });
    assert.match((await form.getAttribute('action')) ?? '', /\/ui\/subscriptions$/, 'the form posts to /ui/subscriptions');
    assert.equal(((await form.getAttribute('method')) ?? '').toLowerCase(), 'post');
    const createButton = form.locator('button[type="submit"], button:not([type]), input[type="submit"]').last();

    // A URL the server refuses (the scheme), so the browser's own checks let it through.
    await (await field(page, 'Endpoint URL', 'url')).fill('ftp://127.0.0.1:9/hook');
    await page.locator('input[name="events"][value="job.completed"]').check();
    const refused = await submit(page, createButton);
    assert.equal(refused.status(), 422, 'POST /ui/subscriptions with an ftp: URL');
    const url = page.locator('input[name="url"]');
    assert.equal(await url.inputValue(), 'ftp://127.0.0.1:9/hook', 'the form comes back filled');
    assert.equal(await url.getAttribute('aria-invalid'), 'true', 'the URL field is aria-invalid');
    const describedBy = await url.getAttribute('aria-describedby');
    assert.ok(describedBy, 'the URL field has aria-describedby');
    const message = (await page.locator(`[id="${describedBy.split(/\s+/)[0]}"]`).innerText()).trim();
    assert.ok(message.length > 0, 'the error next to the URL field says something');
    assert.ok(
      await page.locator('input[name="events"][value="job.completed"]').isChecked(),
      'the events come back checked',
    );

    await (await field(page, 'Endpoint URL', 'url')).fill(receiver.url);
    await page.locator('input[name="events"][value="job.completed"]').check();
    await page.locator('input[name="events"][value="job.failed"]').check();
    for (const value of ['job.completed', 'job.failed', '*']) {
      assert.equal(await page.locator(`input[type="checkbox"][name="events"][value="${value}"]`).count(), 1, `an events checkbox ${value}`);
    }
    await field(page, 'Other event types', 'other_events');
    await (await field(page, /^\s*ID\b/, 'id')).fill('ui-sub');
    await (await field(page, 'Webhook secret', 'secret')).fill(RECEIVER_SECRET);
    await (await field(page, 'Signature', 'signature')).selectOption('abstrakt');
    await field(page, 'Owner', 'owner');
    const created = await submit(page, createButton);
    assert.equal(created.status(), 303, 'POST /ui/subscriptions with a good form redirects (Post/Redirect/Get)');
    assert.equal(await h1(page), 'Subscription created');
    assert.equal((await page.locator('code#secret').innerText()).trim(), RECEIVER_SECRET, 'the secret, shown once');
    // A reload creates nothing and shows the secret no more.
    const reloaded = await page.reload();
    assert.equal(reloaded.status(), 410, 'the reloaded secret page');
    assert.ok(!(await page.content()).includes(RECEIVER_SECRET), 'a reload does not show the secret again');
    const listed = await hookd.api('GET', '/v1/subscriptions');
    assert.equal(listed.body.subscriptions.filter((s) => s.url === receiver.url && s.managed_by === 'api').length, 1, 'one subscription, not two');
    assert.ok(
      (await page.locator('a[href$="/ui/subscriptions/ui-sub"]').count()) >= 1,
      'a link to the new subscription',
    );

    const stored = await hookd.api('GET', '/v1/subscriptions/ui-sub');
    assert.equal(stored.status, 200);
    assert.equal(stored.body.url, receiver.url);
    assert.deepEqual([...stored.body.events].sort(), ['job.completed', 'job.failed']);
    assert.equal(stored.body.managed_by, 'api');

    await page.goto(`${hookd.base}/ui/subscriptions/ui-sub`);
    assert.equal(await h1(page), 'Subscription ui-sub');
    assert.ok(!(await page.content()).includes(RECEIVER_SECRET), 'the subscription page never shows the secret');
  });

  step('Send test event: the delivery page shows it delivered, the receiver verified it', async () => {
    await uiSub();
    const page = await adminPage();
    await page.goto(`${hookd.base}/ui/subscriptions/ui-sub`);
    assert.ok((await mainText(page)).includes(receiver.url), 'the subscription page shows its endpoint');
    await page.getByRole('button', { name: 'Send test event', exact: true }).click();
    await page.waitForURL(DELIVERY_URL);
    const id = page.url().match(DELIVERY_URL)[1];
    assert.equal(await h1(page), `Delivery ${id}`);

    const attempts = await reloadUntil(page, `an attempt of ${id} answered 200`, async (p) => {
      const rows = await table(p, ATTEMPT_COLUMNS);
      return rows.some((r) => /\b200\b/.test(r.Status)) && rows;
    });
    const ok = attempts.find((r) => /\b200\b/.test(r.Status));
    assert.match(ok['Response excerpt'], /received/, 'the response excerpt is the receiver\'s answer');
    const verified = await waitFor(`the receiver to answer ${id} with 200 (signature verified)`, () =>
      receiver.results().find((r) => r.delivery === id && r.status === 200),
    );
    const row = await listedState(page, id, 'subscription=ui-sub');
    assert.ok(row, `${id} is listed under subscription ui-sub`);
    assert.equal(row.State, 'delivered');
    assert.equal(row['Event type'], 'job.test');

    await page.goto(`${hookd.base}/ui/deliveries/${id}`);
    const headings = (await page.locator('h2').allInnerTexts()).map((t) => t.trim());
    for (const h of ['Request', 'Attempts', 'Copy as curl']) assert.ok(headings.includes(h), `a section "${h}" (h2s: ${headings})`);
    const text = await page.content();
    for (const header of ['Content-Type', 'User-Agent', 'X-Abstrakt-Event', 'X-Abstrakt-Delivery', 'X-Abstrakt-Attempt', 'X-Abstrakt-Signature']) {
      assert.ok(text.includes(header), `the request shows the ${header} header`);
    }
    const signature = String(verified.signature).replace(/^sha256=/, '');
    assert.ok(signature.length >= 32 && !text.includes(signature), 'the signature sent is masked');
    assert.ok(!text.includes(RECEIVER_SECRET), 'the delivery page never shows the secret');
    const pres = await page.locator('pre').allInnerTexts();
    assert.ok(pres.some((p) => p.includes(JSON.parse(verified.body).request_id)), 'the body sent, in a <pre>');
    const curl = pres.find((p) => /curl/.test(p) && /openssl/.test(p));
    assert.ok(curl, `a curl snippet using openssl (pres: ${JSON.stringify(pres)})`);
    assert.match(curl, /\$\{?WEBHOOK_SECRET/, 'the curl snippet reads $WEBHOOK_SECRET');
    ids.testDelivery = id;
  });

  step('an ingested job.completed event: the receiver prints "Job … completed!", the dashboard lists both deliveries delivered', async () => {
    await uiSub();
    const page = await adminPage();
    const res = await hookd.api('POST', '/v1/events', jobEvent('browser-job-1'), INGEST_TOKEN);
    assert.equal(res.status, 202, JSON.stringify(res.body));
    ids.completedEvent = res.body.event_id;
    await waitFor('the receiver to print "Job browser-job-1 completed!"', () => receiver.printed('Job browser-job-1 completed!'));

    // Search by event id lists its deliveries: ui-sub's and from-config's.
    const rows = await reloadUntil(
      page,
      `both deliveries of ${ids.completedEvent} delivered`,
      async (p) => {
        const r = await table(p, DELIVERY_COLUMNS);
        return r.length === 2 && r.every((d) => d.State === 'delivered') && r;
      },
      { url: `${hookd.base}/ui/deliveries?q=${ids.completedEvent}` },
    );
    assert.deepEqual(rows.map((r) => r.Subscription).sort(), ['from-config', 'ui-sub']);
    assert.ok(rows.every((r) => r['Event type'] === 'job.completed'));
    ids.completedDeliveries = rows.map((r) => r.Delivery);

    // Search by delivery id jumps to its page.
    await page.goto(`${hookd.base}/ui/deliveries?q=${rows[0].Delivery}`);
    assert.equal(new URL(page.url()).pathname, `/ui/deliveries/${rows[0].Delivery}`, 'q=<delivery id> opens its page');
    // Search by request id lists the event's deliveries.
    await page.goto(`${hookd.base}/ui/deliveries?q=browser-job-1`);
    assert.deepEqual(
      (await table(page, DELIVERY_COLUMNS)).map((r) => r.Delivery).sort(),
      [...ids.completedDeliveries].sort(),
      'q=<request id> lists its deliveries',
    );
  });

  step('Copy as curl: the snippet, run with $WEBHOOK_SECRET, sends a request the receiver verifies', async () => {
    await uiSub();
    const page = await adminPage();
    const id = ids.completedDeliveries?.[0] ?? (await hookd.api('POST', '/v1/subscriptions/ui-sub/test')).body.delivery_id;
    await page.goto(`${hookd.base}/ui/deliveries/${id}`);
    const snippet = (await page.locator('pre').allInnerTexts()).find((p) => /curl/.test(p) && /openssl/.test(p));
    assert.ok(snippet, 'a curl snippet');
    const before = receiver.results().filter((r) => r.delivery === id).length;
    const dir = mkdtempSync(path.join(tmpdir(), 'hookd-curl-'));
    try {
      const run = spawnSync('bash', ['-euo', 'pipefail', '-c', snippet], {
        cwd: dir,
        env: { ...process.env, WEBHOOK_SECRET: RECEIVER_SECRET },
        encoding: 'utf8',
        timeout: 15_000,
      });
      assert.equal(run.status, 0, `the snippet failed: ${run.stderr}`);
      assert.match(run.stdout, /received/, `the receiver's answer: ${run.stdout}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const results = await waitFor("the receiver's RESULT line for the snippet's request", () => {
      const r = receiver.results().filter((x) => x.delivery === id);
      return r.length > before && r;
    });
    assert.equal(results.length, before + 1, 'the snippet reached the receiver once');
    assert.equal(results.at(-1).status, 200, 'and its signature verified');
  });

  step('Deliveries: the filter form (status, subscription, event type, since/until)', async () => {
    const id = await testDelivery();
    const page = await adminPage();
    await waitFor(`${id} delivered`, async () => (await listedState(page, id, 'subscription=ui-sub'))?.State === 'delivered');
    await page.goto(`${hookd.base}/ui/deliveries`);
    assert.equal(await h1(page), 'Deliveries');
    const status = await field(page, 'Status', 'status');
    const options = (await status.locator('option').allInnerTexts()).map((o) => o.trim());
    for (const o of ['any', 'scheduled', 'in_flight', 'delivered', 'dead']) assert.ok(options.includes(o), `Status option ${o} (${options})`);
    await field(page, 'Subscription', 'subscription');
    await field(page, 'Event type', 'event_type');
    for (const [label, name] of [['Since', 'since'], ['Until', 'until']]) {
      assert.equal(await (await field(page, label, name)).getAttribute('type'), 'datetime-local', `${label} is datetime-local`);
    }
    await field(page, 'Search', 'q');

    await status.selectOption('delivered');
    await (await field(page, 'Subscription', 'subscription')).selectOption('ui-sub');
    await page.getByRole('button', { name: 'Filter', exact: true }).click();
    await page.waitForURL(/status=delivered/);
    const query = new URL(page.url()).searchParams;
    assert.equal(query.get('subscription'), 'ui-sub');
    const rows = await table(page, DELIVERY_COLUMNS);
    assert.ok(rows.length >= 1, 'delivered deliveries of ui-sub are listed');
    assert.ok(rows.every((r) => r.State === 'delivered' && r.Subscription === 'ui-sub'), JSON.stringify(rows.map((r) => [r.State, r.Subscription])));
    const link = await rows[0]._row.locator('a').first().getAttribute('href');
    assert.equal(link, `/ui/deliveries/${rows[0].Delivery}`, 'the Delivery cell links to its page');

    await page.goto(`${hookd.base}/ui/deliveries?event_type=job.test`);
    const tests = await table(page, DELIVERY_COLUMNS);
    assert.ok(tests.length >= 1 && tests.every((r) => r['Event type'] === 'job.test'), 'event_type=job.test');

    const hourAgo = new Date(Date.now() - 3600_000).toISOString().slice(0, 16);
    await page.goto(`${hookd.base}/ui/deliveries?until=${hourAgo}`);
    assert.equal((await table(page, DELIVERY_COLUMNS, { orNone: true })).length, 0, `until=${hourAgo} (UTC) lists nothing`);
    await page.goto(`${hookd.base}/ui/deliveries?since=${hourAgo}`);
    assert.ok((await table(page, DELIVERY_COLUMNS)).length >= 1, `since=${hourAgo} (UTC) lists today's deliveries`);
  });

  step('Deliveries: "Next page" follows the cursor and keeps the filters', async () => {
    // 55 job.failed events: ui-sub alone wants them, so its list needs a second page of 50.
    await uiSub();
    const page = await adminPage();
    const sent = [];
    for (let i = 0; i < 55; i++) {
      const res = await hookd.api('POST', '/v1/events', jobEvent(`browser-page-${i}`, 'failed'), INGEST_TOKEN);
      assert.equal(res.status, 202, JSON.stringify(res.body));
      sent.push(res.body.event_id);
    }
    const filter = 'subscription=ui-sub&event_type=job.failed';
    await page.goto(`${hookd.base}/ui/deliveries?${filter}`);
    const first = await table(page, DELIVERY_COLUMNS);
    assert.ok(first.length >= 1 && first.length < 55, `the first page is not everything: ${first.length} rows`);
    const seen = new Set(first.map((r) => r.Delivery));
    let pages = 1;
    for (;;) {
      const next = page.getByRole('link', { name: 'Next page', exact: true });
      if (!(await next.count())) break;
      const href = new URL(await next.getAttribute('href'), page.url());
      assert.ok(href.searchParams.get('cursor'), `Next page carries a cursor: ${href}`);
      assert.equal(href.searchParams.get('subscription'), 'ui-sub', `Next page keeps subscription: ${href}`);
      assert.equal(href.searchParams.get('event_type'), 'job.failed', `Next page keeps event_type: ${href}`);
      await next.click();
      await page.waitForLoadState();
      for (const r of await table(page, DELIVERY_COLUMNS, { orNone: true })) {
        assert.ok(!seen.has(r.Delivery), `${r.Delivery} listed twice`);
        assert.equal(r.Subscription, 'ui-sub');
        seen.add(r.Delivery);
      }
      assert.ok(++pages <= 10, 'at most 10 pages for 55 deliveries');
    }
    assert.ok(pages >= 2, 'a Next page link on the first page');
    assert.equal(seen.size, 55, 'the pages list each of the 55 deliveries once');

    // Previous page goes back, and every page says how many match.
    await page.goto(`${hookd.base}/ui/deliveries?${filter}`);
    assert.match(await page.locator('p.total').innerText(), /^55 deliveries match/);
    assert.equal(await page.getByRole('link', { name: 'Previous page', exact: true }).count(), 0, 'no Previous on the first page');
    await page.getByRole('link', { name: 'Next page', exact: true }).click();
    await page.waitForLoadState();
    assert.match(await page.locator('p.total').innerText(), /^55 deliveries match; page 2/);
    await page.getByRole('link', { name: 'Previous page', exact: true }).click();
    await page.waitForLoadState();
    assert.deepEqual((await table(page, DELIVERY_COLUMNS)).map((r) => r.Delivery), first.map((r) => r.Delivery), 'Previous page shows the first page again');
  });

  step('Search: a request id prefix in any case, combined with the filters', async () => {
    await uiSub();
    const page = await adminPage();
    // browser-page-5 and browser-page-50 … 54, sent by the previous step (ui-sub, job.failed).
    const wanted = ['browser-page-5', ...[0, 1, 2, 3, 4].map((i) => `browser-page-5${i}`)];
    for (const id of wanted) {
      const res = await hookd.api('POST', '/v1/events', jobEvent(id, 'failed'), INGEST_TOKEN);
      assert.ok([202, 200].includes(res.status), JSON.stringify(res.body));
    }
    const rows = await reloadUntil(
      page,
      'the six deliveries found by BROWSER-PAGE-5',
      async (p) => {
        const r = await table(p, DELIVERY_COLUMNS, { orNone: true });
        return r.length === 6 && r;
      },
      { url: `${hookd.base}/ui/deliveries?subscription=ui-sub&q=BROWSER-PAGE-5` },
    );
    assert.ok(rows.every((r) => r.Subscription === 'ui-sub' && r['Event type'] === 'job.failed'), JSON.stringify(rows));
    assert.equal(await (await field(page, 'Subscription', 'subscription')).inputValue(), 'ui-sub', 'the filter stays selected');
    await page.goto(`${hookd.base}/ui/deliveries?status=dead&subscription=ui-sub&q=browser-page-5`);
    assert.equal((await table(page, DELIVERY_COLUMNS, { orNone: true })).length, 0, 'status=dead narrows the search: none of them is dead');
    const one = rows[0].Delivery;
    await page.goto(`${hookd.base}/ui/deliveries?q=${one.slice(0, 20).toLowerCase()}`);
    assert.ok((await table(page, DELIVERY_COLUMNS)).some((r) => r.Delivery === one), 'a delivery id prefix in lower case finds it');
  });

  step('Subscription page: details, pause/resume, edit, signature snippets, rotate secret, delete; config ones read-only', async () => {
    const sub = await ensureSubscription({ id: 'rotate-me', url: receiver.url, events: ['job.failed'] });
    const page = await adminPage();
    const subUrl = `${hookd.base}/ui/subscriptions/rotate-me`;
    await page.goto(subUrl);
    assert.equal(await h1(page), 'Subscription rotate-me');
    const text = await mainText(page);
    assert.ok(text.includes(sub.secret_fingerprint), `the secret fingerprint ${sub.secret_fingerprint} is shown`);
    assert.ok(!(await page.content()).includes(RECEIVER_SECRET), 'never the secret');

    await submit(page, page.getByRole('button', { name: 'Pause', exact: true }));
    assert.ok(await notice(page), `a notice after Pause (${page.url()})`);
    assert.equal((await hookd.api('GET', '/v1/subscriptions/rotate-me')).body.paused, true, 'Pause paused it');
    assert.match(await mainText(page), /paused/i);
    await submit(page, page.getByRole('button', { name: 'Resume', exact: true }));
    assert.equal((await hookd.api('GET', '/v1/subscriptions/rotate-me')).body.paused, false, 'Resume resumed it');

    await page.goto(subUrl);
    const edit = page.locator('form').filter({ has: page.locator('input[name="other_events"]') });
    await edit.locator('input[name="other_events"]').fill('job.custom');
    await submit(page, edit.locator('button[type="submit"], button:not([type]), input[type="submit"]').last());
    const edited = await hookd.api('GET', '/v1/subscriptions/rotate-me');
    assert.ok(edited.body.events.includes('job.custom'), `the edit form added job.custom: ${JSON.stringify(edited.body.events)}`);

    await page.goto(subUrl);
    assert.equal(await page.locator('select[name="lang"]').count(), 1, 'a lang select for the verification snippets');
    for (const [lang, marker] of [['express', /express/i], ['flask', /flask/i], ['go', /package main|net\/http/], ['rust', /fn |hmac/i]]) {
      await page.goto(`${subUrl}?lang=${lang}`);
      const pres = await page.locator('pre').allInnerTexts();
      assert.ok(pres.some((p) => marker.test(p)), `?lang=${lang}: a snippet matching ${marker}`);
    }

    await page.goto(subUrl);
    await page.getByRole('link', { name: 'Rotate secret', exact: true }).click();
    await page.waitForURL(/\/rotate-secret$/);
    assert.match(await mainText(page), /previous secret/, 'the confirmation says what happens');
    assert.equal((await hookd.api('GET', '/v1/subscriptions/rotate-me')).body.rotation, null, 'nothing rotated before the confirmation');
    const rotated = await submit(page, page.getByRole('button', { name: 'Rotate the secret', exact: true }));
    assert.equal(rotated.status(), 303, 'Rotate the secret redirects to the page of the new secret');
    const secret = (await page.locator('code#secret').innerText()).trim();
    assert.ok(secret && secret !== RECEIVER_SECRET, 'a new secret, shown once');
    const after = await hookd.api('GET', '/v1/subscriptions/rotate-me');
    assert.notEqual(after.body.secret_fingerprint, sub.secret_fingerprint, 'the fingerprint changed');
    assert.equal(after.body.rotation.x_abstrakt_signature, 'previous_secret', 'the previous secret still signs');
    await page.goto(subUrl);
    await submit(page, page.getByRole('button', { name: 'Switch to the new secret', exact: true }));
    assert.match((await notice(page)) ?? '', /Switched/, 'the switch says so');
    assert.equal((await hookd.api('GET', '/v1/subscriptions/rotate-me')).body.rotation, null, 'the rotation is finished');

    await page.goto(subUrl);
    await page.getByRole('button', { name: 'Delete', exact: true }).click();
    await page.waitForLoadState();
    assert.equal((await hookd.api('GET', '/v1/subscriptions/rotate-me')).status, 200, 'Delete without the confirm box keeps it');
    await page.goto(subUrl);
    await page.getByLabel('Yes, delete this subscription').check();
    await submit(page, page.getByRole('button', { name: 'Delete', exact: true }));
    assert.equal(new URL(page.url()).pathname, '/ui/subscriptions', 'Delete goes back to the list');
    assert.ok(await notice(page), 'with a notice');
    assert.equal((await hookd.api('GET', '/v1/subscriptions/rotate-me')).status, 404, 'it is gone');

    await page.goto(`${hookd.base}/ui/subscriptions/from-config`);
    assert.match(await mainText(page), /managed by config: read-only/i);
    for (const [role, name] of [['button', 'Delete'], ['link', 'Rotate secret']]) {
      assert.equal(await page.getByRole(role, { name, exact: true }).count(), 0, `no ${name} on a config subscription`);
    }
    assert.equal(await page.locator('input[name="other_events"]').count(), 0, 'no edit form on a config subscription');
    assert.equal(await page.getByRole('button', { name: 'Pause', exact: true }).count(), 1, 'config subscriptions can be paused');

    await page.goto(`${hookd.base}/ui/subscriptions`);
    const subs = await table(page, ['Subscription', 'Endpoint', 'Events', 'Owner', 'Managed by', 'State', 'Consecutive failures']);
    const config = subs.find((s) => s.Subscription === 'from-config');
    assert.ok(config && /config/.test(config['Managed by']), 'from-config is listed as managed by config');
  });

  step('a failing subscription: the overview banner, dead deliveries, Retry all dead matching, Retry now once it answers', async () => {
    const port = await freePort(); // nothing listens there until the receiver starts below
    await ensureSubscription({ id: 'flaky', url: `http://127.0.0.1:${port}/webhook/abstrakt`, events: ['job.failed'] });
    const page = await adminPage();
    await page.goto(`${hookd.base}/ui/subscriptions/flaky`);
    await page.getByRole('button', { name: 'Send test event', exact: true }).click();
    await page.waitForURL(DELIVERY_URL);
    const id = page.url().match(DELIVERY_URL)[1];

    const banner = await reloadUntil(
      page,
      'the overview banner to name flaky as failing',
      async (p) => {
        const b = p.locator('div.banner[role="alert"]');
        if (!(await b.count())) return null;
        const t = await b.first().innerText();
        return /failing/.test(t) && t.includes('flaky') && t;
      },
      { url: `${hookd.base}/ui` },
    );
    assert.ok(!banner.includes('ui-sub'), 'the banner names only failing subscriptions');
    const overview = await table(page, ['Subscription', 'Endpoint', 'State', 'Last success', 'Consecutive failures', 'Last error']);
    const flaky = overview.find((s) => s.Subscription === 'flaky');
    assert.ok(flaky && Number(flaky['Consecutive failures']) > 0, `flaky has consecutive failures: ${JSON.stringify(flaky)}`);
    assert.ok(flaky['Last error'].length > 0, 'and a last error');

    const dead = await reloadUntil(page, `${id} dead after its three attempts`, async () => {
      const row = await listedState(page, id, 'status=dead&subscription=flaky');
      return row?.State === 'dead' && row;
    });
    assert.equal(parseInt(dead.Attempts, 10), 3, `three attempts: ${dead.Attempts}`);
    await page.goto(`${hookd.base}/ui`);
    await screenshot(page, 'overview');

    await page.goto(`${hookd.base}/ui/deliveries?status=dead&subscription=flaky`);
    await submit(page, page.getByRole('button', { name: 'Retry all dead matching', exact: true }));
    // The contract says "N deliveries requeued"; hookd says "N dead deliveries requeued.".
    const requeued = (await notice(page)) ?? '';
    assert.match(requeued, /\b1 (dead )?deliver(y|ies) requeued/, `Retry all dead matching requeued it: notice ${JSON.stringify(requeued)}`);
    // A requeued delivery keeps its attempt count: it is dead again after its next failure.
    await reloadUntil(page, `${id} dead again after another attempt`, async () => {
      const row = await listedState(page, id, 'subscription=flaky');
      return row?.State === 'dead' && parseInt(row.Attempts, 10) >= 4;
    });

    const flakyReceiver = await startReceiver({ port });
    stack.others.push(flakyReceiver);
    await page.goto(`${hookd.base}/ui/deliveries/${id}`);
    await submit(page, page.getByRole('button', { name: 'Retry now', exact: true }));
    assert.equal(new URL(page.url()).pathname, `/ui/deliveries/${id}`, 'Retry now comes back to the delivery');
    assert.ok(await notice(page), 'with a notice');
    await reloadUntil(page, `${id} delivered after Retry now`, async (p) =>
      (await table(p, ATTEMPT_COLUMNS)).some((r) => /\b200\b/.test(r.Status)),
    );
    await waitFor(`the restarted receiver to verify ${id}`, () =>
      flakyReceiver.results().find((r) => r.delivery === id && r.status === 200),
    );
    await reloadUntil(
      page,
      'the banner to stop naming flaky',
      async (p) => {
        const b = p.locator('div.banner[role="alert"]');
        return !(await b.count()) || !(await b.first().innerText()).includes('flaky');
      },
      { url: `${hookd.base}/ui` },
    );
    // Healthy again: its last error is history, not shown as news.
    await page.goto(`${hookd.base}/ui/subscriptions/flaky`);
    const lastError = page.locator('dt', { hasText: /^Last error$/ }).locator('xpath=following-sibling::dd[1]');
    assert.equal((await lastError.innerText()).trim(), '—', 'no "Last error" on a subscription that is healthy again');
  });

  step('security: headers, CSRF, same-origin, sign out refuses the old cookie', async () => {
    const page = await adminPage();
    const { context } = admin;
    const res = await context.request.get(`${hookd.base}/ui`);
    const headers = res.headers();
    assert.deepEqual(cspDirectives(headers['content-security-policy']), CSP, `CSP: ${headers['content-security-policy']}`);
    assert.equal(headers['x-content-type-options'], 'nosniff');
    assert.equal(headers['referrer-policy'], 'same-origin');
    assert.equal(headers['cache-control'], 'no-store');
    assert.equal(headers['x-frame-options'], 'DENY');
    const css = await context.request.get(`${hookd.base}/ui/static/style.css`);
    assert.equal(css.status(), 200, 'GET /ui/static/style.css');
    assert.match(css.headers()['content-type'] ?? '', /text\/css/);

    await page.goto(`${hookd.base}/ui/subscriptions/from-config`);
    const csrf = await page.locator('input[name="csrf"]').first().getAttribute('value');
    assert.ok(csrf, 'the page carries a csrf field');
    const pause = `${hookd.base}/ui/subscriptions/from-config/pause`;
    const post = (form, headers) => context.request.post(pause, { form, headers, maxRedirects: 0 });

    const wrong = await post({ csrf: 'wrong' }, { origin: hookd.base });
    assert.equal(wrong.status(), 403, 'a wrong csrf');
    assert.match(await wrong.text(), /CSRF token missing or wrong/i);
    const missing = await post({}, { origin: hookd.base });
    assert.equal(missing.status(), 403, 'no csrf');
    const foreign = await post({ csrf }, { origin: 'http://evil.example' });
    assert.equal(foreign.status(), 403, 'another Origin');
    assert.match(await foreign.text(), /cross-origin request refused/i);
    const anonymous = await post({ csrf }, {});
    assert.equal(anonymous.status(), 403, 'neither Origin nor Referer');
    const foreignLogin = await context.request.post(`${hookd.base}/ui/login`, {
      form: { token: ADMIN_TOKEN },
      headers: { origin: 'http://evil.example' },
      maxRedirects: 0,
    });
    assert.equal(foreignLogin.status(), 403, 'POST /ui/login from another origin');
    assert.equal((await hookd.api('GET', '/v1/subscriptions/from-config')).body.paused, false, 'none of those paused it');
    const byReferer = await post({ csrf }, { referer: `${hookd.base}/ui/subscriptions/from-config` });
    assert.equal(byReferer.status(), 303, 'a same-origin Referer and the csrf');
    assert.equal((await hookd.api('GET', '/v1/subscriptions/from-config')).body.paused, true, 'that one paused it');
    await hookd.api('POST', '/v1/subscriptions/from-config/resume');

    // Sign out in a context of its own; its cookie is refused afterwards.
    const other = await adminContext(browser, hookd.base);
    const cookie = (await other.context.cookies()).find((c) => c.name === 'hookd_session');
    await other.page.getByRole('button', { name: 'Sign out', exact: true }).click();
    await other.page.waitForURL(/\/ui\/login$/);
    assert.equal((await other.context.cookies()).filter((c) => c.name === 'hookd_session' && c.value).length, 0, 'the cookie is cleared');
    await other.context.close();
    const replay = await newContext(browser);
    await replay.addCookies([cookie]);
    const replayPage = await replay.newPage();
    await replayPage.goto(`${hookd.base}/ui`);
    assert.equal(new URL(replayPage.url()).pathname, '/ui/login', 'the signed-out session is refused');
    await replay.close();
  });

  step('with JavaScript disabled: sign in and create a subscription (generated secret)', async () => {
    const context = await newContext(browser, { javaScriptEnabled: false });
    try {
      const page = await context.newPage();
      await signIn(page, hookd.base);
      assert.equal(new URL(page.url()).pathname, '/ui');
      assert.equal(await h1(page), 'Overview');
      await page.goto(`${hookd.base}/ui/subscriptions/new`);
      await (await field(page, 'Endpoint URL', 'url')).fill(receiver.url);
      await page.locator('input[name="events"][value="*"]').check();
      await (await field(page, /^\s*ID\b/, 'id')).fill('nojs-sub');
      const form = page.locator('form').filter({ has: page.locator('input[name="url"]') });
      const created = await submit(page, form.locator('button[type="submit"], button:not([type]), input[type="submit"]').last());
      assert.equal(created.status(), 303);
      assert.equal(await h1(page), 'Subscription created');
      const secret = (await page.locator('code#secret').innerText()).trim();
      assert.ok(secret.length >= 16, `a generated secret (${secret.length} chars)`);
      const stored = await hookd.api('GET', '/v1/subscriptions/nojs-sub');
      assert.equal(stored.status, 200);
      assert.deepEqual(stored.body.events, ['*']);
    } finally {
      await context.close();
    }
  });

  step('accessibility: axe finds no serious or critical violation', async () => {
    await testDelivery();
    // The CSP forbids scripts: axe runs in contexts that bypass it.
    const anonymous = await newContext(browser, { bypassCSP: true });
    const { context, page } = await adminContext(browser, hookd.base, { bypassCSP: true });
    try {
      const problems = [];
      const check = async (p, name) => {
        for (const v of await seriousA11yViolations(p)) problems.push(`${name} (${p.url()}): ${v}`);
      };
      const login = await anonymous.newPage();
      await login.goto(`${hookd.base}/ui/login`);
      await check(login, 'sign-in');
      for (const [name, path] of [
        ['overview', '/ui'],
        ['deliveries', '/ui/deliveries'],
        ['delivery', `/ui/deliveries/${ids.testDelivery}`],
        ['subscriptions', '/ui/subscriptions'],
        ['new subscription', '/ui/subscriptions/new'],
        ['subscription', '/ui/subscriptions/ui-sub'],
      ]) {
        await page.goto(hookd.base + path);
        await check(page, name);
      }
      // The form with its errors: the 422 page of a same-origin POST, shown at its URL.
      await page.goto(`${hookd.base}/ui/subscriptions/new`);
      const csrf = await page.locator('input[name="csrf"]').first().getAttribute('value');
      const refused = await context.request.post(`${hookd.base}/ui/subscriptions`, {
        form: { csrf, url: 'ftp://127.0.0.1:9/hook', events: 'job.completed', signature: 'abstrakt' },
        headers: { origin: hookd.base },
        maxRedirects: 0,
      });
      assert.equal(refused.status(), 422, 'POST /ui/subscriptions with an ftp: URL');
      await page.route(`${hookd.base}/ui/subscriptions`, (route) => route.fulfill({ response: refused }));
      await page.goto(`${hookd.base}/ui/subscriptions`);
      assert.equal(await page.locator('input[name="url"]').getAttribute('aria-invalid'), 'true');
      await check(page, 'new subscription with errors');
      assert.deepEqual(problems, [], `axe violations:\n${problems.join('\n')}`);
    } finally {
      await Promise.allSettled([context.close(), anonymous.close()]);
    }
  });

  step('screenshots (docs/img with HOOKD_SCREENSHOTS=1)', async () => {
    await uiSub();
    const page = await adminPage();
    const id = await testDelivery();
    const shots = [
      ['deliveries', '/ui/deliveries'],
      ['delivery', `/ui/deliveries/${ids.completedDeliveries?.[0] ?? id}`],
      ['subscription', '/ui/subscriptions/ui-sub'],
      ['new-subscription', '/ui/subscriptions/new'],
    ];
    for (const [name, path] of shots) {
      const response = await page.goto(hookd.base + path);
      assert.equal(response.status(), 200, `GET ${path}`);
      await screenshot(page, name);
    }
  });
});
