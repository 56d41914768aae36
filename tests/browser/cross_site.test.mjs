// Web pages cannot drive an open (token-less) hookd on a developer's laptop (issue 28,
// finding 1), in a real browser: a page of another origin that auto-submits an
// enctype="text/plain" form to /v1/subscriptions creates nothing, and a page whose name was
// rebound to 127.0.0.1 (DNS rebinding, played by chromium's --host-resolver-rules) gets 421
// from the API and the dashboard alike.

import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';

import { launchBrowser, newContext, startHookd, withLogs } from './support.mjs';

const REBOUND = 'rebind.attacker.example';

/**
 * The attacker's site: serves `html` at / on 127.0.0.1, on a port of its own (another port is
 * another origin). Resolves to `{ url, close }`.
 */
function startAttackerSite(html) {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(html);
  });
  return new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      resolve({
        url: `http://127.0.0.1:${server.address().port}/`,
        close: () => new Promise((done) => server.close(done)),
      });
    });
  });
}

/**
 * A page whose form posts `{"id": id, ..., "secret": "...=..."}` as text/plain to `action` on
 * load: the form's `name=value` becomes one JSON document, the `=` inside the secret.
 */
function textPlainFormPage(action, id) {
  const name = `{"id":"${id}","url":"http://127.0.0.1:9/exfil","events":["*"],"secret":"attacker-secret-`;
  return `<!doctype html><title>cute cats</title>
<form method="POST" action="${action}" enctype="text/plain">
<input type="hidden" name='${name}' value='padding"}'>
</form>
<script>document.forms[0].submit();</script>`;
}

describe('cross-site pages and an open hookd', () => {
  let hookd;
  let browser;
  const others = [];
  const step = (name, fn) =>
    it(name, { timeout: 60_000 }, withLogs(() => (hookd ? [hookd.child] : []), fn));

  before(async () => {
    hookd = await startHookd({ open: true });
    browser = await launchBrowser([`--host-resolver-rules=MAP ${REBOUND} 127.0.0.1`]);
  });

  after(async () => {
    await Promise.allSettled([browser?.close(), ...others.map((o) => o.close())]);
    await hookd?.stop();
  });

  step('a text/plain form auto-submitted from another origin creates no subscription', async () => {
    const action = `${hookd.base}/v1/subscriptions`;
    const attacker = await startAttackerSite(textPlainFormPage(action, 'csrf-exfil'));
    others.push(attacker);
    const context = await newContext(browser);
    try {
      const page = await context.newPage();
      const posted = page.waitForResponse((r) => r.url() === action && r.request().method() === 'POST');
      await page.goto(attacker.url);
      const response = await posted;
      assert.equal(response.request().headers()['content-type'], 'text/plain', 'the form posted text/plain');
      assert.equal(response.status(), 403, `the cross-site form's POST: ${await response.text()}`);
      assert.match(await response.text(), /cross-site request refused/);
    } finally {
      await context.close();
    }
    const shown = await hookd.api('GET', '/v1/subscriptions/csrf-exfil');
    assert.equal(shown.status, 404, `no subscription csrf-exfil: ${JSON.stringify(shown.body)}`);
    const listed = await hookd.api('GET', '/v1/subscriptions');
    assert.equal(listed.status, 200);
    const ids = listed.body.subscriptions.map((s) => s.id);
    assert.ok(!ids.includes('csrf-exfil'), `no subscription was created: ${ids}`);
  });

  step('a page on a name rebound to 127.0.0.1 gets 421 from the dashboard and the API', async () => {
    const port = new URL(hookd.base).port;
    const rebound = `http://${REBOUND}:${port}`;
    const context = await newContext(browser, { bypassCSP: true });
    try {
      const page = await context.newPage();
      const login = await page.goto(`${rebound}/ui/login`);
      assert.equal(login.status(), 421, `GET /ui/login by the rebound name: ${await login.text()}`);
      assert.match(await login.text(), /allowed_hosts/);
      // What the rebinding page's script would do next: same-origin, so no preflight.
      const answer = await page.evaluate(async (body) => {
        const res = await fetch('/v1/subscriptions', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body,
        });
        return { status: res.status, text: await res.text() };
      }, JSON.stringify({ id: 'rebound', url: 'http://127.0.0.1:9/exfil', events: ['*'] }));
      assert.equal(answer.status, 421, `POST /v1/subscriptions by the rebound name: ${answer.text}`);
      // The same browser reaching hookd by its own address is answered.
      const own = await page.goto(`${hookd.base}/ui/login`);
      assert.equal(own.status(), 200, 'GET /ui/login at 127.0.0.1');
    } finally {
      await context.close();
    }
    const shown = await hookd.api('GET', '/v1/subscriptions/rebound');
    assert.equal(shown.status, 404, `no subscription rebound: ${JSON.stringify(shown.body)}`);
  });
});
