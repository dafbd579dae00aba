// Browser test of the cluster dashboard (the API at `/`): Debian's chromium driven by
// playwright-core against the real API server (the operator's `api_in_memory` example: the API
// on embedded stores with the in-memory run backend; nothing executes runs, so this test plays
// the runner of an external run through the API).
//
// Login with a token, a cookie that is not a session refused, a `runs:read` session without the
// Cancel button (its POST gets 403), a log line arriving live, cancel, CSRF refused, logout, a
// waiting approval gate approved with its button by an `approvals:write` session.
// Screenshots go to artifacts/cluster-*.png. Prints "N passed, M failed"; exits non-zero on a
// failure.

import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const bin = process.env.SPARKWING_API_BIN || path.join(root, 'target/debug/examples/api_in_memory');
const artifacts = path.join(here, 'artifacts');
fs.mkdirSync(artifacts, { recursive: true });
const T = { step: 30_000 };

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

let passed = 0;
let failed = 0;
let page;
async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    passed++;
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e.message}`);
    if (page) {
      await page.screenshot({ path: path.join(artifacts, `cluster-failure-${name.replace(/\W+/g, '-')}.png`), fullPage: true }).catch(() => {});
    }
    throw e;
  }
}

async function shot(name) {
  await page.screenshot({ path: path.join(artifacts, `cluster-${name}.png`), fullPage: true });
}

// The API: one line "<url> <admin token>", then it serves until its stdin closes.
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sparkwing-cluster-dash-'));
const api = spawn(bin, ['--data-dir', dataDir], { stdio: ['pipe', 'pipe', 'inherit'] });
const first = await new Promise((resolve, reject) => {
  readline.createInterface({ input: api.stdout }).once('line', resolve);
  api.on('exit', (code) => reject(new Error(`the API exited ${code}`)));
});
const [base, admin] = first.trim().split(' ');

async function call(method, p, token, body) {
  const r = await fetch(`${base}${p}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, json: text ? JSON.parse(text) : null };
}

async function mint(principal, scopes) {
  const r = await call('POST', '/api/v1/admin/tokens', admin, { principal, scopes });
  assert(r.status === 201, `token: ${r.status} ${JSON.stringify(r.json)}`);
  return r.json.token;
}

async function login(token) {
  await page.goto(`${base}/`);
  await page.waitForSelector('form#login');
  await page.fill('#token', token);
  await Promise.all([page.waitForNavigation(), page.click('form#login button[type=submit]')]);
}

async function logout() {
  await Promise.all([page.waitForNavigation(), page.click('#logout')]);
  await page.waitForSelector('form#login');
}

let context;
let exitCode = 0;
try {
  const reader = await mint('bob', ['runs:read']);
  const trigger = await mint('alice', ['runs:read', 'runs:trigger']);
  let ns, name, runner;
  await step('an external run is triggered through the API', async () => {
    const r = await call('POST', '/api/v1/runs', trigger, { pipeline: 'build', source: { external: {} } });
    assert(r.status === 201, `trigger: ${r.status} ${JSON.stringify(r.json)}`);
    ({ namespace: ns, name, runnerToken: runner } = r.json);
    const s = await call('PUT', `/api/v1/runs/${ns}/${name}/jobs/build`, runner, { state: 'running', startedAt: new Date().toISOString() });
    assert(s.status === 204, `job state: ${s.status}`);
  });

  context = await chromium.launchPersistentContext(fs.mkdtempSync(path.join(os.tmpdir(), 'sparkwing-chromium-')), {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-sync'],
    viewport: { width: 1280, height: 900 },
  });
  page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(T.step);
  page.on('pageerror', (e) => console.log(`page error: ${e.message}`));

  await step('without a session a page goes to the login form', async () => {
    await page.goto(`${base}/runs/${ns}/${name}`);
    await page.waitForSelector('form#login');
    assert(page.url().startsWith(`${base}/login?next=`), page.url());
    await shot('01-login');
  });

  await step('a cookie that is not a session is refused', async () => {
    await context.addCookies([{ name: 'sparkwing_session', value: reader, url: base }]);
    await page.goto(`${base}/`);
    await page.waitForSelector('form#login');
    await context.clearCookies();
  });

  await step('a wrong token is refused on the form', async () => {
    await login('swt_not-a-token');
    await page.waitForSelector('#login-error');
  });

  await step('a runs:read session sees the run but no Cancel button', async () => {
    await login(reader);
    await page.waitForSelector(`#runs-list a.run-link[href="/runs/${ns}/${name}"]`);
    const cookies = await context.cookies();
    const c = cookies.find((k) => k.name === 'sparkwing_session');
    assert(c && c.httpOnly && c.sameSite === 'Strict', JSON.stringify(cookies));
    assert(c.value !== reader, 'the cookie holds the token');
    assert(!(await page.content()).includes(reader), 'the page holds the token');
    await page.click(`#runs-list a.run-link`);
    await page.waitForSelector('svg.dag .node[data-job="build"]');
    assert((await page.$('#cancel-run')) === null, 'a Cancel button for runs:read');
    await shot('02-read-only');
  });

  await step('its POST of a cancel gets 403', async () => {
    const csrf = await page.$eval('form.session input[name=csrf]', (e) => e.value);
    const status = await page.evaluate(async ([u, t]) => {
      const r = await fetch(u, { method: 'POST', headers: { 'x-csrf-token': t } });
      return r.status;
    }, [`/runs/${ns}/${name}/cancel`, csrf]);
    assert(status === 403, `status ${status}`);
    await logout();
  });

  await step('a log line arrives live', async () => {
    await login(trigger);
    await page.goto(`${base}/runs/${ns}/${name}?job=build`);
    await page.waitForSelector('#cancel-run');
    const r = await call('POST', `/api/v1/runs/${ns}/${name}/logs`, runner, [
      { job: 'build', seq: 1, line: 'compiling the cluster dashboard' },
    ]);
    assert(r.status === 200, `logs: ${r.status}`);
    await page.waitForSelector('#log .line >> text=compiling the cluster dashboard');
    await shot('03-live-log');
  });

  await step('a POST without the CSRF token is refused', async () => {
    const status = await page.evaluate(async (u) => (await fetch(u, { method: 'POST' })).status, `/runs/${ns}/${name}/cancel`);
    assert(status === 403, `status ${status}`);
    const run = await call('GET', `/api/v1/runs/${ns}/${name}`, admin);
    assert(!run.json.run.spec.cancel, 'cancelled without CSRF');
  });

  await step('Cancel cancels the run', async () => {
    await Promise.all([page.waitForNavigation(), page.click('#cancel-run')]);
    const run = await call('GET', `/api/v1/runs/${ns}/${name}`, admin);
    assert(run.json.run.spec.cancel === 'Cancelled', JSON.stringify(run.json.run.spec));
    // The run's executor sees the cancel and ends the run: the page follows.
    await call('PUT', `/api/v1/runs/${ns}/${name}/jobs/build`, runner, { state: 'cancelled' });
    const f = await call('POST', `/api/v1/runs/${ns}/${name}/finish`, runner, { phase: 'Cancelled', message: 'cancelled from the dashboard' });
    assert(f.status === 200, `finish: ${f.status} ${JSON.stringify(f.json)}`);
    await page.waitForSelector('#run-status[data-state="cancelled"]');
    await page.waitForSelector('#cancel-run', { state: 'detached' });
    await shot('04-cancelled');
  });

  await step('logout ends the session', async () => {
    const before = (await context.cookies()).find((k) => k.name === 'sparkwing_session');
    await logout();
    await context.addCookies([{ name: 'sparkwing_session', value: before.value, url: base }]);
    await page.goto(`${base}/`);
    await page.waitForSelector('form#login');
  });

  await step('an approvals:write session approves a waiting gate with its button', async () => {
    const approver = await mint('carol', ['runs:read', 'approvals:write']);
    const r = await call('POST', '/api/v1/runs', trigger, { pipeline: 'ship', source: { external: {} } });
    assert(r.status === 201, `trigger: ${r.status} ${JSON.stringify(r.json)}`);
    const { namespace: gns, name: gname, runnerToken: grunner } = r.json;
    const s = await call('PUT', `/api/v1/runs/${gns}/${gname}/jobs/approve`, grunner, { state: 'waiting', attempt: 1, gate: true, gateMessage: 'Ship it?' });
    assert(s.status === 204, `job state: ${s.status}`);
    await login(approver);
    await page.goto(`${base}/runs/${gns}/${gname}`);
    const button = '[data-gate-id="approve"] form.gate-form button[data-gate-decision="approve"]';
    await page.waitForSelector(button);
    assert((await page.textContent('[data-gate-id="approve"]')).includes('Ship it?'), 'no message');
    await shot('05-gate-waiting');
    await page.fill('[data-gate-id="approve"] .gate-comment', 'looks good');
    await Promise.all([page.waitForNavigation(), page.click(button)]);
    await page.waitForSelector('[data-gate-id="approve"] .gate-decided[data-decision="approve"]');
    const shown = await page.textContent('[data-gate-id="approve"] .gate-decided');
    assert(shown.includes('approved by carol: looks good'), shown);
    assert((await page.$(button)) === null, 'the button stayed');
    const g = await call('GET', `/api/v1/runs/${gns}/${gname}/gates/approve`, admin);
    assert(g.json.decided && g.json.decided.by === 'carol' && g.json.decided.comment === 'looks good', JSON.stringify(g.json));
    await shot('06-gate-approved');
    await logout();
  });
} catch (e) {
  exitCode = 1;
} finally {
  if (context) await context.close().catch(() => {});
  api.stdin.end();
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(exitCode || (failed ? 1 : 0));
}
