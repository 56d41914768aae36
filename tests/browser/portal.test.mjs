// The customer portal (/ui/portal/<token>) in a real browser: links made with
// POST /v1/portal-links show only their owner's subscriptions and deliveries, need no admin
// session, and expire.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';

import {
  INGEST_TOKEN,
  RECEIVER_SECRET,
  h1,
  jobEvent,
  mainText,
  newContext,
  reloadUntil,
  screenshot,
  seriousA11yViolations,
  stackProcesses,
  startStack,
  stopStack,
  table,
  waitFor,
  withLogs,
} from './support.mjs';

const DELIVERY_COLUMNS = ['Delivery', 'Event type', 'Subscription', 'State', 'Attempts', 'Created', 'Last error'];
const SUBSCRIPTION_COLUMNS = ['Subscription', 'Endpoint', 'Events'];

describe('customer portal', () => {
  const stack = {}; // receiver, hookd, browser: see startStack
  let hookd;
  let receiver;
  let browser;
  let context; // no admin session in it
  let page;
  let portal; // the acme link's URL
  const deliveries = {}; // subscription id -> its delivery of the job.completed event
  const step = (name, fn) => it(name, { timeout: 60_000 }, withLogs(() => stackProcesses(stack), fn));

  before(async () => {
    await startStack(stack);
    ({ hookd, receiver, browser } = stack);
    context = await newContext(browser);
    page = await context.newPage();

    for (const [id, owner] of [
      ['acme-1', 'acme'],
      ['acme-2', 'acme'],
      ['globex-1', 'globex'],
    ]) {
      const res = await hookd.api('POST', '/v1/subscriptions', {
        id,
        owner,
        url: receiver.url,
        events: ['job.completed'],
        secret: RECEIVER_SECRET,
      });
      assert.equal(res.status, 201, `POST /v1/subscriptions ${id}: ${JSON.stringify(res.body)}`);
    }
    // An event of each owner: acme's reaches acme-1, acme-2 and from-config (no owner);
    // globex's reaches globex-1 and from-config.
    for (const [requestId, owner, count] of [['portal-job-1', 'acme', 3], ['portal-job-2', 'globex', 2]]) {
      const sent = await hookd.api('POST', '/v1/events', { ...jobEvent(requestId), owner }, INGEST_TOKEN);
      assert.equal(sent.status, 202, JSON.stringify(sent.body));
      const listed = await waitFor(`the ${count} deliveries of ${requestId} delivered`, async () => {
        const res = await hookd.api('GET', '/v1/deliveries?status=delivered');
        const mine = res.body.deliveries.filter((d) => d.event_id === sent.body.event_id);
        return mine.length === count && mine;
      });
      for (const d of listed) deliveries[d.subscription] ??= d.id;
    }
  }, { timeout: 60_000 });

  after(() => stopStack(stack));

  async function link(body) {
    const res = await hookd.api('POST', '/v1/portal-links', body);
    assert.equal(res.status, 201, `POST /v1/portal-links ${JSON.stringify(body)}: ${JSON.stringify(res.body)}`);
    return res.body;
  }

  step('POST /v1/portal-links: 201 with the url, owner and expiry; 422 for a bad owner or expires_in', async () => {
    const made = await link({ owner: 'acme', expires_in: '1h' });
    assert.ok(made.url.startsWith(`${hookd.base}/ui/portal/`), `the url is on the API's address: ${made.url}`);
    assert.equal(made.owner, 'acme');
    const expires = Date.parse(made.expires_at);
    assert.ok(Math.abs(expires - (Date.now() + 3600_000)) < 120_000, `expires_at about an hour from now: ${made.expires_at}`);
    portal = made.url;

    for (const [body, field] of [
      [{}, 'owner'],
      [{ owner: '' }, 'owner'],
      [{ owner: 'acme', expires_in: 'forever' }, 'expires_in'],
      [{ owner: 'acme', expires_in: '31d' }, 'expires_in'],
    ]) {
      const res = await hookd.api('POST', '/v1/portal-links', body);
      assert.equal(res.status, 422, `POST /v1/portal-links ${JSON.stringify(body)}: ${JSON.stringify(res.body)}`);
      assert.equal(res.body.field, field, `the 422 names ${field}: ${JSON.stringify(res.body)}`);
    }
    const open = await fetch(`${hookd.base}/v1/portal-links`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ owner: 'acme' }),
    });
    assert.equal(open.status, 401, 'POST /v1/portal-links without the admin token');
  });

  step("the portal shows only its owner's subscriptions and deliveries, without an admin session", async () => {
    portal ??= (await link({ owner: 'acme' })).url;
    const prefix = new URL(portal).pathname;
    const response = await page.goto(portal);
    assert.equal(response.status(), 200, `GET ${portal}`);
    assert.equal(new URL(page.url()).pathname, prefix, 'no redirect to a sign-in');
    assert.equal(await page.getByRole('button', { name: 'Sign out' }).count(), 0, 'no Sign out');
    const navLinks = await page.locator('nav a').evaluateAll((as) => as.map((a) => a.getAttribute('href')));
    assert.ok(navLinks.length >= 3, `a nav: ${navLinks}`);
    assert.ok(navLinks.every((h) => h.startsWith(prefix)), `the nav stays in the portal: ${navLinks}`);
    const overview = await mainText(page);
    assert.ok(overview.includes('acme-1') && overview.includes('acme-2'), "the overview shows acme's subscriptions");
    for (const other of ['globex-1', 'from-config']) assert.ok(!overview.includes(other), `the overview hides ${other}`);
    const headers = response.headers();
    assert.match(headers['content-security-policy'] ?? '', /frame-ancestors 'none'/);
    assert.match(headers['content-security-policy'] ?? '', /script-src 'none'|default-src 'none'/);
    await screenshot(page, 'portal');

    await page.goto(`${portal}/subscriptions`);
    const subs = await table(page, SUBSCRIPTION_COLUMNS);
    assert.deepEqual(subs.map((s) => s.Subscription).sort(), ['acme-1', 'acme-2']);

    await page.goto(`${portal}/deliveries`);
    const listed = await table(page, DELIVERY_COLUMNS);
    assert.deepEqual(listed.map((d) => d.Subscription).sort(), ['acme-1', 'acme-2'], 'only acme deliveries');
    const href = await listed[0]._row.locator('a').first().getAttribute('href');
    assert.equal(href, `${prefix}/deliveries/${listed[0].Delivery}`, 'deliveries link inside the portal');
    const own = await page.goto(`${portal}/deliveries/${deliveries['acme-1']}`);
    assert.equal(own.status(), 200);
    assert.equal(await h1(page), `Delivery ${deliveries['acme-1']}`);

    for (const path of [
      `/subscriptions/globex-1`,
      `/subscriptions/from-config`,
      `/deliveries/${deliveries['globex-1']}`,
      `/deliveries/${deliveries['from-config']}`,
    ]) {
      const res = await page.goto(portal + path);
      assert.equal(res.status(), 404, `GET <portal>${path}`);
      assert.ok(!(await page.content()).includes(receiver.url), `<portal>${path} shows nothing of it`);
    }
    await page.goto(`${portal}/deliveries?subscription=globex-1`);
    assert.ok(
      !(await page.content()).includes(deliveries['globex-1']),
      "filtering by another owner's subscription lists none of its deliveries",
    );
    await page.goto(`${portal}/deliveries?q=${deliveries['globex-1']}`);
    assert.ok(
      !(await page.locator('h1').allInnerTexts()).some((t) => t.includes(deliveries['globex-1'])),
      `searching another owner's delivery id does not open it (${page.url()})`,
    );
  });

  step("a portal's POSTs need its own csrf and this origin", async () => {
    portal ??= (await link({ owner: 'acme' })).url;
    const other = (await link({ owner: 'globex' })).url;
    const base = new URL(portal).origin;
    await page.goto(`${other}/subscriptions/globex-1`);
    const otherCsrf = await page.locator('input[name="csrf"]').first().getAttribute('value');
    await page.goto(`${portal}/subscriptions/acme-1`);
    const csrf = await page.locator('input[name="csrf"]').first().getAttribute('value');
    assert.ok(csrf && otherCsrf, 'the portal pages carry a csrf field');
    const pause = `${portal}/subscriptions/acme-1/pause`;
    const post = (form, headers) => context.request.post(pause, { form, headers, maxRedirects: 0 });
    assert.equal((await post({ csrf: otherCsrf }, { origin: base })).status(), 403, "another link's csrf");
    assert.equal((await post({ csrf }, { origin: 'http://evil.example' })).status(), 403, 'another origin');
    assert.equal((await hookd.api('GET', '/v1/subscriptions/acme-1')).body.paused, false, 'neither paused it');
    const other404 = await context.request.post(`${portal}/subscriptions/globex-1/pause`, {
      form: { csrf },
      headers: { origin: base },
      maxRedirects: 0,
    });
    assert.equal(other404.status(), 404, "pausing another owner's subscription");
    assert.equal((await hookd.api('GET', '/v1/subscriptions/globex-1')).body.paused, false, 'globex-1 is not paused');
    const ok = await post({ csrf }, { origin: base });
    assert.equal(ok.status(), 303, 'its own csrf from this origin');
    assert.equal((await hookd.api('GET', '/v1/subscriptions/acme-1')).body.paused, true, 'that paused it');
    await hookd.api('POST', '/v1/subscriptions/acme-1/resume');
  });

  step('a portal subscription is created with its owner, and its test event is delivered', async () => {
    portal ??= (await link({ owner: 'acme' })).url;
    const prefix = new URL(portal).pathname;
    await page.goto(`${portal}/subscriptions/new`);
    assert.equal(await h1(page), 'New subscription');
    assert.equal(await page.locator('[name="owner"]').count(), 0, 'no Owner field in the portal');
    await page.getByLabel(/^\s*Endpoint URL/).fill(receiver.url);
    await page.locator('input[name="events"][value="job.failed"]').check();
    assert.equal(await page.locator('[name="id"]').count(), 0, 'no ID field in the portal: its ids are generated');
    await page.getByLabel(/^\s*Webhook secret/).fill(RECEIVER_SECRET);
    const form = page.locator('form').filter({ has: page.locator('input[name="url"]') });
    assert.equal(await form.getAttribute('action'), `${prefix}/subscriptions`, 'the form posts inside the portal');
    await form.locator('button[type="submit"], button:not([type]), input[type="submit"]').last().click();
    await page.waitForLoadState();
    assert.equal(await h1(page), 'Subscription created');
    assert.equal((await page.locator('code#secret').innerText()).trim(), RECEIVER_SECRET);
    const made = new URL(page.url()).pathname.match(new RegExp(`^${prefix}/subscriptions/(sub_[^/]+)/secret$`));
    assert.ok(made, `the secret page names the generated id: ${page.url()}`);
    const id = made[1];
    const stored = await hookd.api('GET', `/v1/subscriptions/${id}`);
    assert.equal(stored.status, 200);
    assert.equal(stored.body.owner, 'acme', 'the portal gives it its owner');

    await page.goto(`${portal}/subscriptions/${id}`);
    assert.equal(await h1(page), `Subscription ${id}`);
    await page.getByRole('button', { name: 'Send test event', exact: true }).click();
    const at = new RegExp(`^${prefix}/deliveries/(dlv_[^/?#]+)$`);
    await waitFor('the test event to open its delivery page', () => at.test(new URL(page.url()).pathname));
    const delivery = new URL(page.url()).pathname.match(at)[1];
    await reloadUntil(page, `${delivery} answered 200`, async (p) =>
      (await table(p, ['Attempt', 'Status'])).some((r) => /\b200\b/.test(r.Status)),
    );
    await waitFor(`the receiver to verify ${delivery}`, () => receiver.results().find((r) => r.delivery === delivery && r.status === 200));
  });

  step('a tampered link is refused, an expired one shows the expired page', async () => {
    portal ??= (await link({ owner: 'acme' })).url;
    const last = portal.slice(-1);
    const tampered = portal.slice(0, -1) + (last === 'A' ? 'B' : 'A');
    const bad = await page.goto(tampered);
    assert.equal(bad.status(), 403, 'a tampered link');
    assert.match(await page.content(), /invalid link|link is invalid/i);

    const short = await link({ owner: 'acme', expires_in: '2s' });
    const fresh = await page.goto(short.url);
    assert.equal(fresh.status(), 200, 'the 2 s link works at first');
    await waitFor(
      'the 2 s link to show "This link has expired"',
      async () => {
        const res = await page.goto(short.url);
        return res.status() === 403 && /This link has expired/.test(await page.content());
      },
      { timeout: 10_000, interval: 250 },
    );
    assert.ok(Date.now() >= Date.parse(short.expires_at), 'not before expires_at');
  });

  step('accessibility of the portal: axe finds no serious or critical violation', async () => {
    portal ??= (await link({ owner: 'acme' })).url;
    const a11y = await newContext(browser, { bypassCSP: true });
    try {
      const p = await a11y.newPage();
      const problems = [];
      for (const path of ['', '/deliveries', `/deliveries/${deliveries['acme-1']}`, '/subscriptions', '/subscriptions/new', '/subscriptions/acme-1']) {
        await p.goto(portal + path);
        for (const v of await seriousA11yViolations(p)) problems.push(`<portal>${path}: ${v}`);
      }
      assert.deepEqual(problems, [], `axe violations:\n${problems.join('\n')}`);
    } finally {
      await a11y.close();
    }
  });
});
