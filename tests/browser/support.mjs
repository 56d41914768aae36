// Shared harness of the dashboard's browser tests: the real hookd binary, the seed's Express
// receiver, Debian's chromium (playwright-core), axe-core and the screenshots. Everything listens
// on loopback; every wait is a condition polled against a deadline.

import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';

import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const CHROMIUM = process.env.HOOKD_CHROMIUM || '/usr/bin/chromium';
export const ADMIN_TOKEN = 'browser-admin-token-0123456789';
export const INGEST_TOKEN = 'browser-ingest-token-0123456789';
/** The secret the Express receiver verifies with. */
export const RECEIVER_SECRET = 'browser-receiver-secret';

/** `HOOKD_BIN`, else target/release/hookd when it exists, else target/debug/hookd. */
export function hookdBin() {
  const bin =
    process.env.HOOKD_BIN ||
    [path.join(ROOT, 'target/release/hookd'), path.join(ROOT, 'target/debug/hookd')].find((p) =>
      existsSync(p),
    );
  assert.ok(bin && existsSync(bin), `no hookd binary (HOOKD_BIN=${process.env.HOOKD_BIN ?? ''}): run cargo build --release`);
  return path.resolve(bin);
}

// ------------------------------------------------------------------ waiting

/**
 * Polls `check` (sync or async) every `interval` ms until it returns a truthy value, which it
 * returns; throws naming `what` (and the last value or error) after `timeout` ms.
 */
export async function waitFor(what, check, { timeout = 10_000, interval = 100 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      const detail = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${detail})`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** Reloads `page` (at `url` when given) until `check(page)` is truthy, within `timeout`. */
export async function reloadUntil(page, what, check, { url, timeout = 15_000, interval = 250 } = {}) {
  return waitFor(
    what,
    async () => {
      if (url) await page.goto(url);
      else await page.reload();
      return check(page);
    },
    { timeout, interval },
  );
}

// ------------------------------------------------------------------ child processes

const children = new Set();

function killChildren() {
  for (const child of children) {
    try {
      child.proc.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}

// A test process that exits or is stopped without running its `after` hooks still takes its
// children along.
process.on('exit', killChildren);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    killChildren();
    process.exit(128 + { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 }[signal]);
  });
}

/** A child process whose stdout lines and stderr are kept; `stop()` kills it (SIGKILL). */
class Child {
  constructor(name, command, args, env) {
    this.name = name;
    this.stdoutLines = [];
    this.stderr = '';
    this.exit = null;
    this.proc = spawn(command, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let partial = '';
    this.proc.stdout.setEncoding('utf8');
    this.proc.stdout.on('data', (chunk) => {
      const parts = (partial + chunk).split('\n');
      partial = parts.pop();
      this.stdoutLines.push(...parts);
    });
    this.proc.stderr.setEncoding('utf8');
    this.proc.stderr.on('data', (chunk) => {
      this.stderr += chunk;
    });
    this.exited = new Promise((resolve) => {
      this.proc.on('exit', (code, signal) => {
        this.exit = { code, signal };
        children.delete(this);
        resolve(this.exit);
      });
      this.proc.on('error', (error) => {
        this.exit = { error };
        children.delete(this);
        resolve(this.exit);
      });
    });
    children.add(this);
  }

  /** The last `n` characters of stderr and stdout, for failure messages. */
  tail(n = 3000) {
    const out = this.stdoutLines.join('\n');
    return `---- ${this.name} stderr ----\n${this.stderr.slice(-n)}\n---- ${this.name} stdout ----\n${out.slice(-n)}`;
  }

  /** Kills (SIGKILL) and waits for the exit, at most 10 s. */
  async stop() {
    if (this.exit) return this.exit;
    this.proc.kill('SIGKILL');
    return waitFor(`${this.name} to exit`, () => this.exit, { timeout: 10_000, interval: 20 });
  }
}

/** A loopback port that was free a moment ago (bound on port 0, then released). */
export async function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * The seed's Express receiver (tests/receivers/express/server.js) with `WEBHOOK_SECRET=secret`
 * on `port` (0: any free one; it prints `LISTENING <port>`).
 */
export async function startReceiver({ secret = RECEIVER_SECRET, port = 0 } = {}) {
  const server = path.join(ROOT, 'tests/receivers/express/server.js');
  assert.ok(
    existsSync(path.join(ROOT, 'tests/receivers/express/node_modules/express/package.json')),
    'the Express receiver has no node_modules: run scripts/test-deps.sh browser',
  );
  const child = new Child('express receiver', process.execPath, [server], {
    ...process.env,
    WEBHOOK_SECRET: secret,
    PORT: String(port),
  });
  const bound = await waitFor(
    'the Express receiver to print LISTENING <port>',
    () => {
      if (child.exit) throw new Error(`it exited (${JSON.stringify(child.exit)})\n${child.tail()}`);
      const line = child.stdoutLines.find((l) => l.startsWith('LISTENING '));
      return line && Number(line.slice('LISTENING '.length).trim());
    },
    { timeout: 15_000, interval: 20 },
  );
  return {
    child,
    port: bound,
    url: `http://127.0.0.1:${bound}/webhook/abstrakt`,
    /** Every `RESULT {...}` line so far, parsed. */
    results() {
      return child.stdoutLines
        .filter((l) => l.startsWith('RESULT '))
        .map((l) => JSON.parse(l.slice('RESULT '.length)));
    },
    /** Whether the seed code printed `line` (e.g. `Job abc completed!`). */
    printed(line) {
      return child.stdoutLines.includes(line);
    },
    stop: () => child.stop(),
  };
}

// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;]*m/g;

/** The `api=` and `metrics=` addresses of hookd's `hookd started` log line. */
function boundAddresses(stderr) {
  const line = stderr
    .replace(ANSI, '')
    .split('\n')
    .find((l) => l.includes('hookd started'));
  if (!line) return null;
  const field = (name) => line.match(new RegExp(`[ "]${name}[=":]+"?([0-9.:\\[\\]]+)`))?.[1];
  const api = field('api');
  const metrics = field('metrics');
  return api && metrics ? { api, metrics } : null;
}

/**
 * `hookd run --config <dir>/hookd.toml` with both listeners on 127.0.0.1:0, the store in
 * `<dir>/db`, the admin and ingest tokens (none with `open`: the local, token-less API),
 * loopback targets, a short retry schedule (0 s then 1 s: a failing delivery is dead after
 * about a second) and `extra` TOML appended.
 * Reads the bound addresses from the `hookd started api=... metrics=...` log line, then waits
 * for `/readyz` to answer 200.
 */
export async function startHookd({ extra = '', open = false } = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), 'hookd-browser-'));
  const tokens = open
    ? ''
    : `tokens = [
  { secret = "${ADMIN_TOKEN}", scopes = ["admin", "ingest"] },
  { secret = "${INGEST_TOKEN}", scopes = ["ingest"] },
]`;
  const config = `[api]
listen = "127.0.0.1:0"
${tokens}

[metrics]
listen = "127.0.0.1:0"

[storage]
path = ${JSON.stringify(path.join(dir, 'db'))}

[delivery]
retry_schedule = ["0s", "1s"]
timeout = "5s"

[targets]
allow = ["127.0.0.1"]
allow_http = true
${extra}
`;
  const configPath = path.join(dir, 'hookd.toml');
  writeFileSync(configPath, config);
  const env = { ...process.env, RUST_LOG: 'info' };
  delete env.HOOKD_CONFIG;
  delete env.HOOKD_LOG_FORMAT;
  delete env.NOTIFY_SOCKET;
  const child = new Child('hookd', hookdBin(), ['run', '--config', configPath], env);
  const addresses = await waitFor(
    'hookd to log "hookd started api=... metrics=..."',
    () => {
      if (child.exit) throw new Error(`hookd exited (${JSON.stringify(child.exit)})\n${child.tail()}`);
      return boundAddresses(child.stderr);
    },
    { timeout: 15_000, interval: 20 },
  );
  await waitFor(
    'hookd /readyz to answer 200',
    async () => {
      if (child.exit) throw new Error(`hookd exited (${JSON.stringify(child.exit)})\n${child.tail()}`);
      const res = await fetch(`http://${addresses.metrics}/readyz`);
      return res.status === 200;
    },
    { timeout: 15_000, interval: 50 },
  );
  const base = `http://${addresses.api}`;
  return {
    child,
    dir,
    base,
    metrics: addresses.metrics,
    /** A JSON call to hookd's API with the admin token; resolves to `{status, body}`. */
    async api(method, urlPath, body, token = ADMIN_TOKEN) {
      const res = await fetch(base + urlPath, {
        method,
        headers: {
          authorization: `Bearer ${token}`,
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      let json = null;
      try {
        json = text ? JSON.parse(text) : null;
      } catch {
        json = { text };
      }
      return { status: res.status, body: json };
    },
    async stop() {
      await child.stop();
      if (!process.env.HOOKD_KEEP_TMP) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A job event as job runners send it (the README's shape); its type is `job.<status>`. */
export function jobEvent(requestId, status = 'completed') {
  return {
    request_id: requestId,
    status,
    result: { items: [{ url: `https://cdn.example/${requestId}.mp4`, content_type: 'video/mp4' }] },
    metrics: { inference_time: 45.2, queue_time: 2.1 },
  };
}

// ------------------------------------------------------------------ the browser

/** Chromium, with `args` beside `--no-sandbox` (e.g. `--host-resolver-rules=...`). */
export async function launchBrowser(args = []) {
  assert.ok(
    existsSync(CHROMIUM),
    `${CHROMIUM} is missing: run scripts/test-deps.sh browser (apt-get install chromium)`,
  );
  return chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', ...args] });
}

export const VIEWPORT = { width: 1280, height: 800 };

/** The form POSTs hookd refused (403) in the current step; see `withLogs`. */
const refusedPosts = [];

/**
 * A browser context at 1280x800 with `options`, whose actions give up after 5 s and
 * navigations after 10 s: the pages are server-rendered on loopback, a missing element is a
 * failure to report, not to wait 30 s for.
 */
export async function newContext(browser, options = {}) {
  const context = await browser.newContext({ viewport: VIEWPORT, ...options });
  context.setDefaultTimeout(5_000);
  context.setDefaultNavigationTimeout(10_000);
  // Form POSTs the browser made that hookd refused: named in a failing step's message.
  context.on('response', async (response) => {
    const request = response.request();
    if (request.method() !== 'POST' || response.status() !== 403 || !request.isNavigationRequest()) return;
    const origin = (await request.headerValue('origin').catch(() => null)) ?? '(none)';
    const body = await response.text().catch(() => '');
    const title = body.match(/<h1[^>]*>([^<]*)</)?.[1] ?? '';
    refusedPosts.push(`POST ${new URL(response.url()).pathname} (Origin: ${origin}) -> 403 ${title}`);
  });
  return context;
}

/**
 * Signs `page` in at `<base>/ui/login` with `token` through the form (label "Admin token",
 * button "Sign in"); returns the response of the form's POST chain's last page.
 */
export async function signIn(page, base, token = ADMIN_TOKEN) {
  await page.goto(`${base}/ui/login`);
  await page.getByLabel('Admin token').fill(token);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.waitForLoadState();
}

/**
 * A signed-in admin context (and its page, on /ui) on `browser`, with `options` for
 * newContext. It signs in with a plain same-origin `POST /ui/login` (the context's request API
 * shares its cookies): the steps about other pages do not depend on the sign-in form, which
 * the sign-in steps drive themselves.
 */
export async function adminContext(browser, base, options = {}) {
  const context = await newContext(browser, options);
  const res = await context.request.post(`${base}/ui/login`, {
    form: { token: ADMIN_TOKEN },
    headers: { origin: base },
    maxRedirects: 0,
  });
  assert.equal(res.status(), 303, `POST /ui/login with the admin token: ${res.status()} ${await res.text()}`);
  const page = await context.newPage();
  await page.goto(`${base}/ui`);
  assert.equal(new URL(page.url()).pathname, '/ui', 'the session cookie opens /ui');
  return { context, page };
}

// ------------------------------------------------------------------ one suite's processes

/**
 * Fills `stack` as each starts (so that `stopStack` stops what did start): `receiver`, the
 * Express receiver with RECEIVER_SECRET; `hookd`, with a config subscription "from-config" to
 * it for job.completed; `browser`, chromium. `stack.others` takes processes a step starts.
 */
export async function startStack(stack) {
  stack.others = [];
  stack.receiver = await startReceiver();
  stack.hookd = await startHookd({
    extra: `
[[subscription]]
id = "from-config"
url = "${stack.receiver.url}"
secret = "${RECEIVER_SECRET}"
events = ["job.completed"]
`,
  });
  stack.browser = await launchBrowser();
}

/** Closes the browser and stops every process of `stack`, whatever fails on the way. */
export async function stopStack(stack) {
  await Promise.allSettled([stack.browser?.close()]);
  await Promise.allSettled(
    [stack.hookd, stack.receiver, ...(stack.others ?? [])].filter(Boolean).map((p) => p.stop()),
  );
}

/** The processes of `stack`, for `withLogs`. */
export function stackProcesses(stack) {
  return [stack.hookd, stack.receiver, ...(stack.others ?? [])].filter(Boolean).map((p) => p.child);
}

// ------------------------------------------------------------------ page helpers

/** The text of the page's one `<h1>` (asserting there is exactly one). */
export async function h1(page) {
  const count = await page.locator('h1').count();
  assert.equal(count, 1, `${page.url()}: expected one <h1>, found ${count}`);
  return (await page.locator('h1').innerText()).trim();
}

/** Normalised text: whitespace folded. */
export const norm = (s) => (s ?? '').replace(/\s+/g, ' ').trim();

/**
 * The rows of the first table whose header cells include every one of `columns`, as objects
 * keyed by header text (cell text, whitespace folded), each with `_row` (its locator).
 * Throws when no table has those columns, unless `orNone` (an empty list may show no table):
 * then [] when the page has no table at all.
 */
export async function table(page, columns, { orNone = false } = {}) {
  const tables = page.locator('table');
  const n = await tables.count();
  const seen = [];
  for (let i = 0; i < n; i++) {
    const t = tables.nth(i);
    const headers = (await t.locator('thead th, tr:first-child th').allInnerTexts()).map(norm);
    seen.push(headers);
    if (!columns.every((c) => headers.includes(c))) continue;
    const rows = t.locator('tbody tr');
    const out = [];
    for (let r = 0; r < (await rows.count()); r++) {
      const row = rows.nth(r);
      const cells = (await row.locator('th, td').allInnerTexts()).map(norm);
      if (cells.length < headers.length) continue; // an empty-state row spanning the table
      const obj = { _row: row };
      headers.forEach((h, k) => (obj[h] = cells[k]));
      out.push(obj);
    }
    return out;
  }
  if (orNone && n === 0) return [];
  throw new Error(
    `${page.url()}: no table with columns ${JSON.stringify(columns)} (tables' headers: ${JSON.stringify(seen)})`,
  );
}

/**
 * The form control labelled by text matching `label` (a RegExp, or a string that must start the
 * label), asserting its `name` attribute is `name`.
 */
export async function field(page, label, name) {
  const re = label instanceof RegExp ? label : new RegExp(`^\\s*${label.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`);
  const control = page.getByLabel(re);
  const count = await control.count();
  assert.ok(count >= 1, `${page.url()}: no control labelled ${re}`);
  const named = [];
  for (let i = 0; i < count; i++) named.push(await control.nth(i).getAttribute('name'));
  const index = named.indexOf(name);
  assert.ok(index >= 0, `${page.url()}: the control labelled ${re} has name ${JSON.stringify(named)}, expected "${name}"`);
  return control.nth(index);
}

/** The text of `<p role="status">` (the flash notice), or null. */
export async function notice(page) {
  const status = page.locator('p[role="status"]');
  return (await status.count()) ? norm(await status.first().innerText()) : null;
}

/** The main element's text, whitespace folded. */
export async function mainText(page) {
  return norm(await page.locator('main').innerText());
}

// ------------------------------------------------------------------ axe and screenshots

const AXE_SOURCE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

/**
 * Runs axe-core on `page` (whose context must bypass the CSP, which forbids scripts) and
 * returns its violations of impact serious or critical, each as a printable line.
 */
export async function seriousA11yViolations(page) {
  await page.addScriptTag({ content: AXE_SOURCE });
  const result = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.map((n) => `${n.target.join(' ')}: ${n.failureSummary}`),
    }));
  });
  return result
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `[${v.impact}] ${v.id}: ${v.help}\n    ${v.nodes.join('\n    ')}`);
}

/**
 * Where screenshots go: docs/img (overwritten) when HOOKD_SCREENSHOTS=1, else
 * $TMPDIR/hookd-browser-screenshots (overwritten on each run too).
 */
export function screenshotDir() {
  return process.env.HOOKD_SCREENSHOTS === '1'
    ? path.join(ROOT, 'docs/img')
    : path.join(tmpdir(), 'hookd-browser-screenshots');
}

/** Saves a PNG of `page` as `dashboard-<name>.png` (the 1280x800 viewport); returns its path. */
export async function screenshot(page, name) {
  const dir = screenshotDir();
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `dashboard-${name}.png`);
  await page.screenshot({ path: file });
  return file;
}

/**
 * `test`-like wrapper: runs `fn`, and on failure appends the tails of the given processes'
 * output to the error, so a failing step shows what hookd and the receiver said.
 */
export function withLogs(processes, fn) {
  return async (t) => {
    refusedPosts.length = 0;
    try {
      await fn(t);
    } catch (e) {
      const refused = refusedPosts.length
        ? `---- form POSTs of the browser refused by hookd ----\n${refusedPosts.join('\n')}\n`
        : '';
      const tails = processes()
        .map((p) => p.tail(2500))
        .join('\n');
      if (e && typeof e === 'object') e.message = `${e.message}\n${refused}${tails}`;
      throw e;
    }
  };
}
