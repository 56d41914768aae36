// The dashboard and the portal at a desk (1280 px) and on a phone (390 px), on the real binary:
// nothing wider than the screen, lists as cards on the phone, the sections on one line, the
// forms' controls inside the margin, timestamps on one line, a failed connection without an
// empty box, no "Retry now" while an attempt is being sent, the icon, the charts (drawn inside
// the screen, a hatched bar for failures, their table, the window links), and axe-core at both
// widths.

import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';

import {
  RECEIVER_SECRET,
  adminContext,
  freePort,
  newContext,
  reloadUntil,
  screenshot,
  seriousA11yViolations,
  stackProcesses,
  table,
  startStack,
  stopStack,
  waitFor,
  withLogs,
} from './support.mjs';

const WIDTHS = [
  { name: 'desk', viewport: { width: 1280, height: 800 } },
  { name: 'phone', viewport: { width: 390, height: 844 } },
];

/** What on the page is wider than the screen, or hides a horizontal scroll: a list of lines. */
async function overflows(page) {
  return page.evaluate(() => {
    const out = [];
    const width = document.documentElement.clientWidth;
    if (document.documentElement.scrollWidth > width + 1) {
      out.push(`the page scrolls sideways: ${document.documentElement.scrollWidth} > ${width}`);
    }
    for (const el of document.querySelectorAll('main *, header *')) {
      // What is clipped out of sight for screen readers only (a list's column names) is not seen.
      if (el.closest('pre, thead, .visually-hidden')) continue;
      const r = el.getBoundingClientRect();
      if (r.width && r.right > width + 1) out.push(`${el.tagName}#${el.id}.${el.className} ends at ${Math.round(r.right)}`);
    }
    for (const el of document.querySelectorAll('.scroll')) {
      if (el.scrollWidth > el.clientWidth + 1) out.push(`a table scrolls inside itself: ${el.scrollWidth} > ${el.clientWidth}`);
    }
    return out.slice(0, 10);
  });
}

/** The distinct tops of the section links: one when they are on one line. */
async function navLines(page) {
  return page.locator('nav li').evaluateAll((lis) => new Set(lis.map((li) => Math.round(li.getBoundingClientRect().top))).size);
}

describe('layout at 1280 and 390 px', () => {
  const stack = {};
  let hookd;
  let receiver;
  let browser;
  let hanging; // a server that accepts connections and never answers
  const ids = {};
  const step = (name, fn) => it(name, { timeout: 90_000 }, withLogs(() => stackProcesses(stack), fn));

  before(async () => {
    await startStack(stack);
    ({ hookd, receiver, browser } = stack);
    hanging = net.createServer(() => {});
    await new Promise((resolve) => hanging.listen(0, '127.0.0.1', resolve));
    const long = `${receiver.url}?tenant=a-rather-long-customer-name&region=eu-central-1`;
    for (const [id, url, owner] of [
      ['a-subscription-with-a-long-identifier-2026', long, 'acme'],
      ['refused', `http://127.0.0.1:${await freePort()}/webhook/abstrakt`, 'acme'],
      ['hanging', `http://127.0.0.1:${hanging.address().port}/webhook`, undefined],
    ]) {
      const res = await hookd.api('POST', '/v1/subscriptions', { id, url, owner, events: ['job.completed'], secret: RECEIVER_SECRET });
      assert.equal(res.status, 201, JSON.stringify(res.body));
    }
    const sent = await hookd.api('POST', '/v1/subscriptions/refused/test');
    ids.refused = sent.body.delivery_id;
    const ok = await hookd.api('POST', '/v1/subscriptions/a-subscription-with-a-long-identifier-2026/test');
    ids.ok = ok.body.delivery_id;
    await waitFor('the refused delivery to have its failed attempt', async () => {
      const d = await hookd.api('GET', `/v1/deliveries/${ids.refused}`);
      return d.body.attempts >= 1;
    });
    const link = await hookd.api('POST', '/v1/portal-links', { owner: 'acme' });
    ids.portal = link.body.url;
  }, { timeout: 60_000 });

  after(async () => {
    hanging?.close();
    await stopStack(stack);
  });

  for (const { name, viewport } of WIDTHS) {
    step(`${name} (${viewport.width} px): nothing wider than the screen, one line of sections, cards on a phone`, async () => {
      const { context, page } = await adminContext(browser, hookd.base, { viewport, bypassCSP: true });
      try {
        const pages = [
          '/ui',
          '/ui/deliveries',
          `/ui/deliveries/${ids.refused}`,
          '/ui/subscriptions',
          '/ui/subscriptions/new',
          '/ui/subscriptions/a-subscription-with-a-long-identifier-2026',
          '/ui/subscriptions/a-subscription-with-a-long-identifier-2026/rotate-secret',
          '/ui/subscriptions/refused/resend?since=2000-01-01T00:00',
          '/ui/audit',
          '/ui/events',
        ];
        const portalPages = ['', '/subscriptions', '/subscriptions/new', '/events', '/subscriptions/refused', '/subscriptions/refused/resend?since=2000-01-01T00:00', '/audit'].map((p) => ids.portal + p);
        const problems = [];
        for (const url of [...pages.map((p) => hookd.base + p), ...portalPages]) {
          await page.goto(url);
          const where = new URL(url).pathname.replace(/portal\/[^/]+/, 'portal/<token>');
          for (const o of await overflows(page)) problems.push(`${where}: ${o}`);
          const lines = await navLines(page);
          if (lines !== 1) problems.push(`${where}: the sections take ${lines} lines`);
          for (const v of await seriousA11yViolations(page)) problems.push(`${where}: axe ${v}`);
          // A timestamp on one line: its text's boxes all start at one height.
          const wrapped = await page.locator('.time').evaluateAll((els) =>
            els
              .filter((e) => {
                const range = document.createRange();
                range.selectNodeContents(e);
                return new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size > 1;
              })
              .map((e) => e.textContent),
          );
          if (wrapped.length) problems.push(`${where}: timestamps wrap: ${wrapped.join(', ')}`);
        }
        assert.deepEqual(problems, [], problems.join('\n'));

        // On a phone the lists are cards: the endpoint gets most of the width, the id does not.
        await page.goto(`${hookd.base}/ui/subscriptions`);
        const widths = await page.locator('tbody tr').first().evaluate((tr) => {
          const cell = (label) => tr.querySelector(`td[data-label="${label}"]`).getBoundingClientRect();
          return { id: cell('Subscription'), endpoint: cell('Endpoint'), row: tr.getBoundingClientRect() };
        });
        if (viewport.width < 600) {
          assert.ok(widths.endpoint.width > 0.8 * widths.row.width, `the endpoint has the card's width: ${JSON.stringify(widths)}`);
          assert.ok(widths.endpoint.height < 120, `the endpoint is readable, not a column of 4 characters: ${JSON.stringify(widths.endpoint)}`);
        } else {
          assert.ok(widths.id.width < 0.4 * widths.row.width, `the id column leaves room: ${JSON.stringify(widths)}`);
        }
        // The Signature select is whole.
        await page.goto(`${hookd.base}/ui/subscriptions/new`);
        const select = await page.locator('select#signature').boundingBox();
        assert.ok(select.x >= 0 && select.x + select.width <= viewport.width, `the Signature select fits: ${JSON.stringify(select)}`);
      } finally {
        await context.close();
      }
    });
  }

  for (const { name, viewport } of WIDTHS) {
    step(`${name} (${viewport.width} px): the charts draw on the overview, a subscription's page and the portal`, async () => {
      const { context, page } = await adminContext(browser, hookd.base, { viewport, bypassCSP: true });
      try {
        const problems = [];
        for (const url of [`${hookd.base}/ui?window=hour`, `${hookd.base}/ui/subscriptions/refused?window=day`, `${ids.portal}?window=week`]) {
          await page.goto(url);
          const where = new URL(url).pathname.replace(/portal\/[^/]+/, 'portal/<token>');
          const activity = page.getByRole('img', { name: /^Delivered deliveries and failed attempts per/ });
          const latency = page.getByRole('img', { name: /^Attempt latency in milliseconds per/ });
          for (const chart of [activity, latency]) {
            const box = await chart.boundingBox();
            assert.ok(box && box.width > 0.5 * Math.min(viewport.width, 600), `${where}: a chart drawn wide enough: ${JSON.stringify(box)}`);
            assert.ok(box.x >= 0 && box.x + box.width <= viewport.width, `${where}: a chart inside the screen: ${JSON.stringify(box)}`);
          }
          // The refused subscription's failed attempts are a hatched bar (beside the legend's swatch).
          const hatched = await activity.locator('rect[fill="url(#chart-hatch)"]').count();
          assert.ok(hatched >= 2, `${where}: a hatched bar for the failed attempts (${hatched} hatched shapes)`);
          const numbers = page.getByRole('table', { name: /^The charts' numbers, per/ });
          assert.ok(await numbers.isVisible(), `${where}: the table of numbers`);
          const failed = await numbers.locator('tbody tr').evaluateAll((rows) => rows.reduce((n, r) => n + Number(r.cells[3].textContent), 0));
          assert.ok(failed >= 1, `${where}: the table counts the failed attempts (${failed})`);
          for (const o of await overflows(page)) problems.push(`${where}: ${o}`);
          for (const v of await seriousA11yViolations(page)) problems.push(`${where}: axe ${v}`);
        }
        assert.deepEqual(problems, [], problems.join('\n'));
        // The window switcher is plain links.
        await page.goto(`${hookd.base}/ui`);
        await page.getByRole('group', { name: 'Time window' }).getByRole('link', { name: 'week' }).click();
        await page.waitForURL(/\?window=week/);
        assert.equal(await page.locator('.windows a[aria-current="page"]').innerText(), 'week');
        assert.match(await page.locator('#charts').innerText(), /Activity over the last 7 days/);
        if (viewport.width >= 1280) await screenshot(page, 'charts');
      } finally {
        await context.close();
      }
    });
  }

  for (const { name, viewport } of WIDTHS) {
    step(`${name} (${viewport.width} px): the deliveries list refreshes itself only once turned on, and turns off by a link`, async () => {
      const { context, page } = await adminContext(browser, hookd.base, { viewport, bypassCSP: true });
      try {
        await page.goto(`${hookd.base}/ui/deliveries?status=dead`);
        assert.equal(await page.locator('meta[http-equiv="refresh"]').count(), 0, 'off by default');
        assert.deepEqual(await seriousA11yViolations(page), []);
        await page.getByRole('link', { name: 'on', exact: true }).click();
        await page.waitForURL(/refresh=10/);
        assert.equal(await page.locator('meta[http-equiv="refresh"]').getAttribute('content'), '10');
        assert.match(new URL(page.url()).search, /status=dead/, 'the filter stays');
        assert.deepEqual(await overflows(page), []);
        // axe's meta-refresh rule flags any timed refresh: it cannot see that this one is the
        // visitor's own choice, undone by the "off" link beside it (WCAG 2.2.1 lets the user
        // turn it off). Every other rule must pass on this page.
        const others = (await seriousA11yViolations(page)).filter((v) => !v.includes('] meta-refresh:'));
        assert.deepEqual(others, [], others.join('\n'));
        await page.getByRole('link', { name: 'off', exact: true }).click();
        await page.waitForURL((url) => !url.search.includes('refresh'));
        assert.equal(await page.locator('meta[http-equiv="refresh"]').count(), 0, 'off again');
        assert.deepEqual(await seriousA11yViolations(page), []);
      } finally {
        await context.close();
      }
    });
  }

  step('the Audit page lists who changed what: a table at 1280 px, cards at 390 px, the portal in its words; axe clean', async () => {
    const long = 'a-subscription-with-a-long-identifier-2026';
    for (const { name, viewport } of WIDTHS) {
      const { context, page } = await adminContext(browser, hookd.base, { viewport, bypassCSP: true });
      try {
        await page.goto(`${hookd.base}/ui/audit`);
        assert.equal(await page.locator('nav a[aria-current="page"]').innerText(), 'Audit');
        const rows = await table(page, ['When', 'Who', 'What', 'Object', 'Owner', 'Detail']);
        const created = rows.find((r) => r.What === 'created' && r.Object.includes(long));
        assert.ok(created, `${name}: the creation of ${long} is listed: ${JSON.stringify(rows.map((r) => [r.What, r.Object]))}`);
        assert.equal(created.Owner, 'acme');
        assert.ok(rows.some((r) => r.What === 'portal link created'), `${name}: the portal link is listed`);
        const cells = await created._row.evaluate((tr) => [...tr.querySelectorAll('td')].map((td) => td.getBoundingClientRect().width));
        const rowWidth = await created._row.evaluate((tr) => tr.getBoundingClientRect().width);
        if (viewport.width < 600) {
          assert.ok(Math.min(...cells) > 0.8 * rowWidth, `${name}: each field has the card's width: ${cells} of ${rowWidth}`);
        } else {
          assert.ok(Math.max(...cells) < 0.6 * rowWidth, `${name}: a row of columns: ${cells} of ${rowWidth}`);
        }
        assert.deepEqual(await overflows(page), [], `${name}: /ui/audit fits`);
        assert.deepEqual(await seriousA11yViolations(page), [], `${name}: /ui/audit axe`);

        await page.goto(`${ids.portal}/audit`);
        const mine = await table(page, ['When', 'Who', 'What', 'Subscription']);
        const own = mine.find((r) => r.Subscription === long && r.What === 'Subscription created');
        assert.ok(own, `${name}: the portal lists its subscription's creation: ${JSON.stringify(mine.map((r) => [r.What, r.Subscription]))}`);
        assert.ok(own.Who && own.Who !== 'You' && !/token/.test(own.Who), `${name}: the operator's change is the provider's, by name: ${own.Who}`);
        assert.ok(!mine.some((r) => r.Subscription === 'hanging'), `${name}: the portal lists no subscription of the operator's`);
        assert.doesNotMatch(await page.locator('main').innerText(), /token-|dashboard|portal link created/);
        assert.deepEqual(await overflows(page), [], `${name}: the portal's audit page fits`);
        assert.deepEqual(await seriousA11yViolations(page), [], `${name}: the portal's audit page axe`);
      } finally {
        await context.close();
      }
    }
  });

  step('a failed connection shows no empty box; an attempt being sent offers no "Retry now"; the icon is served', async () => {
    const { context, page } = await adminContext(browser, hookd.base);
    try {
      await page.goto(`${hookd.base}/ui/deliveries/${ids.refused}`);
      const empty = await page.locator('pre').evaluateAll((pres) => pres.filter((p) => !p.textContent.trim()).length);
      assert.equal(empty, 0, 'no empty <pre> where the receiver said nothing');
      assert.match(await page.locator('td[data-label="Response excerpt"]').first().innerText(), /no response/);

      const sent = await hookd.api('POST', '/v1/subscriptions/hanging/test');
      const id = sent.body.delivery_id;
      await reloadUntil(page, `${id} in flight`, async (p) => /in_flight/.test(await p.locator('main dl').innerText()), {
        url: `${hookd.base}/ui/deliveries/${id}`,
        timeout: 4_000,
      });
      assert.equal(await page.getByRole('button', { name: 'Retry now', exact: true }).count(), 0, 'no Retry now while in flight');

      const icon = await context.request.get(`${hookd.base}/favicon.ico`);
      assert.equal(icon.status(), 200);
      assert.match(icon.headers()['content-type'] ?? '', /image\/svg\+xml/);
    } finally {
      await context.close();
    }
  });

  step('the secret page keeps its box inside the margin, at both widths', async () => {
    for (const { viewport } of WIDTHS) {
      const context = await newContext(browser, { viewport });
      try {
        const page = await context.newPage();
        await page.goto(ids.portal + '/subscriptions/new');
        await page.getByLabel(/^\s*Endpoint URL/).fill(receiver.url);
        await page.locator('input[name="events"][value="job.completed"]').check();
        await page.locator('form').filter({ has: page.locator('input[name="url"]') }).locator('button[type="submit"]').last().click();
        await page.waitForLoadState();
        const box = await page.locator('input.copy').boundingBox();
        const main = await page.locator('main').evaluate((m) => {
          const r = m.getBoundingClientRect();
          return { right: r.right - parseFloat(getComputedStyle(m).paddingRight) };
        });
        assert.ok(box.x + box.width <= main.right + 1, `${viewport.width} px: the secret box ends at ${box.x + box.width}, the margin at ${main.right}`);
        await hookd.api('DELETE', `/v1/subscriptions/${new URL(page.url()).pathname.split('/').at(-2)}`);
      } finally {
        await context.close();
      }
    }
  });
});

describe('recovery in one click', () => {
  const stack = {};
  const step = (name, fn) => it(name, { timeout: 60_000 }, withLogs(() => stackProcesses(stack), fn));

  before(() => startStack(stack), { timeout: 60_000 });
  after(() => stopStack(stack));

  step('Resend failed deliveries: the count first, then one attempt each, at 390 px', async () => {
    const { hookd, browser } = stack;
    const port = await freePort(); // nothing listens there
    const made = await hookd.api('POST', '/v1/subscriptions', { id: 'down', url: `http://127.0.0.1:${port}/webhook/abstrakt`, events: ['job.failed'] });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const sent = [];
    for (let i = 0; i < 2; i++) sent.push((await hookd.api('POST', '/v1/subscriptions/down/test')).body.delivery_id);
    await waitFor('both dead', async () => {
      const list = await hookd.api('GET', '/v1/deliveries?subscription=down&status=dead');
      return list.body.deliveries.length === 2;
    });
    const { context, page } = await adminContext(browser, hookd.base, { viewport: { width: 390, height: 844 } });
    try {
      await page.goto(`${hookd.base}/ui/subscriptions/down`);
      await page.getByLabel('Failed since (UTC)').fill('2000-01-01T00:00');
      await page.getByRole('button', { name: 'Count them', exact: true }).click();
      await page.waitForURL(/\/resend\?since=/);
      assert.match(await page.locator('main').innerText(), /2 deliveries of down failed for good/);
      await page.getByRole('button', { name: 'Resend 2 deliveries', exact: true }).click();
      await page.waitForURL(/\/ui\/subscriptions\/down\?notice=/);
      assert.match(await page.locator('p[role="status"]').innerText(), /2 of 2 failed deliveries resent/);
      for (const id of sent) {
        await waitFor(`${id} attempted again`, async () => (await hookd.api('GET', `/v1/deliveries/${id}`)).body.attempts >= 4);
      }
    } finally {
      await context.close();
    }
  });
});
