// Browser test of `sparkwing dashboard`: Debian's chromium driven by playwright-core.
//
// Starts a dashboard over a fresh SPARKWING_HOME, opens it, starts real runs of the fixture
// project (fixture/.sparkwing) and watches: the run appearing without a reload, its job graph,
// its log lines arriving, its state flipping to passed, and to failed for a failing pipeline.
// Screenshots go to artifacts/. Prints "N passed, M failed" and exits non-zero on a failure.

import { chromium } from 'playwright-core';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const bin = process.env.SPARKWING_BIN || path.join(root, 'target/debug/sparkwing');
const fixture = path.join(here, 'fixture');
const artifacts = path.join(here, 'artifacts');
const home = fs.mkdtempSync(path.join(os.tmpdir(), 'sparkwing-dash-e2e-'));
const env = { ...process.env, SPARKWING_HOME: home, NO_COLOR: '1' };
fs.rmSync(artifacts, { recursive: true, force: true });
fs.mkdirSync(artifacts, { recursive: true });

const T = { appear: 120_000, step: 30_000, run: 120_000 };

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

function sw(args, opts = {}) {
  const r = spawnSync(bin, args, { env, encoding: 'utf8', timeout: 600_000, ...opts });
  return { code: r.status, out: r.stdout || '', err: r.stderr || '' };
}

function startRun(pipeline, name) {
  const log = fs.openSync(path.join(artifacts, `${name}.log`), 'w');
  const child = spawn(bin, ['run', '-C', fixture, pipeline], { env, stdio: ['ignore', log, log] });
  const done = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, done };
}

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
      await page.screenshot({ path: path.join(artifacts, `failure-${name.replace(/\W+/g, '-')}.png`), fullPage: true }).catch(() => {});
    }
    throw e;
  }
}

async function shot(name) {
  await page.screenshot({ path: path.join(artifacts, `${name}.png`), fullPage: true });
}

const port = await freePort();
const base = `http://127.0.0.1:${port}`;
let context;
let exitCode = 0;
try {
  await step('compile the fixture pipelines', async () => {
    const r = sw(['pipeline', 'describe', '-C', fixture, '--name', 'slow']);
    assert(r.code === 0, `describe exited ${r.code}: ${r.err}`);
  });

  await step('dashboard start returns once it serves', async () => {
    const r = sw(['dashboard', 'start', '--addr', `127.0.0.1:${port}`]);
    assert(r.code === 0, `start exited ${r.code}: ${r.err}`);
    assert(r.out.trim() === `${base}/`, `start printed ${JSON.stringify(r.out)}`);
    const h = await (await fetch(`${base}/api/health`)).json();
    assert(h.service === 'sparkwing-dashboard', JSON.stringify(h));
    const s = sw(['dashboard', 'status']);
    assert(s.code === 0 && s.out.trim() === `${base}/`, `status: ${s.code} ${s.out} ${s.err}`);
    assert(fs.existsSync(path.join(home, 'dashboard.pid')), 'no pid file');
  });

  await step('a port taken by something else is a clear error', async () => {
    const other = net.createServer().listen(0, '127.0.0.1');
    await new Promise((r) => other.on('listening', r));
    const r = sw(['dashboard', 'start', '--addr', `127.0.0.1:${other.address().port}`], {
      env: { ...env, SPARKWING_HOME: fs.mkdtempSync(path.join(os.tmpdir(), 'sparkwing-dash-other-')) },
    });
    other.close();
    assert(r.code === 2, `exit ${r.code}`);
    assert(/already in use/.test(r.err), r.err);
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

  await step('an empty store says how to start a first run', async () => {
    await page.goto(`${base}/`);
    await page.waitForSelector('#empty-store');
    assert((await page.textContent('#empty-store')).includes('sparkwing run <pipeline>'), 'no how-to');
    await shot('01-empty-store');
  });

  let slowId;
  let slow;
  await step('a new run appears without a reload', async () => {
    slow = startRun('slow', 'run-slow');
    await page.waitForSelector('#runs-list tr[data-run]', { timeout: T.appear });
    slowId = await page.getAttribute('#runs-list tr[data-run]', 'data-run');
    assert(slowId.startsWith('run-'), slowId);
    await shot('02-run-appeared');
  });

  await step('its page shows the job graph with needs edges', async () => {
    await page.click(`#runs-list a.run-link`);
    await page.waitForSelector('svg.dag .node[data-job="prepare"]');
    for (const j of ['prepare', 'lint', 'build', 'test']) {
      assert(await page.$(`svg.dag .node[data-job="${j}"]`), `no node ${j}`);
    }
    assert(await page.$('svg.dag .edge[data-from="prepare"][data-to="build"]'), 'no prepare->build edge');
    assert(await page.$('svg.dag .edge[data-from="lint"][data-to="test"]'), 'no lint->test edge');
    const label = await page.getAttribute('svg.dag .node[data-job="prepare"]', 'aria-label');
    assert(/prepare: (running|passed|pending)/.test(label), `state label: ${label}`);
  });

  await step('log lines arrive live', async () => {
    await page.click('svg.dag .node[data-job="prepare"]');
    await page.waitForURL(/job=prepare/);
    await page.waitForSelector('#log .line');
    const first = await page.$$eval('#log .line', (l) => l.length);
    assert(first < 16, `all ${first} lines were there at once: not live`);
    await page.waitForFunction((n) => document.querySelectorAll('#log .line').length > n, first);
    await shot('03-run-live');
    await page.waitForFunction(() => document.querySelectorAll('#log .line').length >= 16, null, { timeout: T.run });
    const lines = await page.$$eval('#log .line .lt', (l) => l.map((x) => x.textContent));
    assert(lines[0] === 'prepare step 1 of 16' && lines[15] === 'prepare step 16 of 16', lines.join('|'));
  });

  await step('the run flips to passed', async () => {
    await page.waitForSelector('#run-status[data-state="success"]', { timeout: T.run });
    assert((await page.textContent('#run-status')).includes('passed'), 'no "passed" label');
    await page.waitForSelector('svg.dag .node[data-job="test"][data-state="success"]');
    assert((await slow.done) === 0, 'sparkwing run slow did not exit 0');
    await page.waitForSelector('#log[data-ended="true"]');
    await shot('04-run-passed');
  });

  await step('search within the log', async () => {
    await page.fill('#log-search', 'step 1');
    await page.waitForFunction(() => document.getElementById('log-matches').textContent.startsWith('8 lines'));
    assert((await page.$$eval('#log .line:not(.hidden) mark', (m) => m.length)) === 8, 'marks');
    await shot('05-log-search');
  });

  let failId;
  await step('a failing run flips to failed', async () => {
    await page.goto(`${base}/`);
    await page.waitForSelector(`#runs-list tr[data-run="${slowId}"][data-status="success"]`);
    const run = startRun('slow-fail', 'run-slow-fail');
    await page.waitForSelector(`#runs-list tr[data-run]:not([data-run="${slowId}"])`, { timeout: T.appear });
    failId = await page.getAttribute(`#runs-list tr[data-run]:not([data-run="${slowId}"])`, 'data-run');
    await page.click(`#runs-list a[href="/runs/${failId}"]`);
    await page.waitForSelector('svg.dag .node[data-job="compile"]');
    await page.waitForSelector('#run-status[data-state="failed"]', { timeout: T.run });
    assert((await page.textContent('#run-status')).includes('failed'), 'no "failed" label');
    await page.waitForSelector('svg.dag .node[data-job="package"][data-state="cancelled"]');
    assert((await page.textContent('.error-box')).includes('compile'), 'no error');
    assert((await run.done) === 1, 'sparkwing run slow-fail did not exit 1');
    await page.click('svg.dag .node[data-job="compile"]');
    // The SDK's explanation of the failure (a job's stdout and stderr are one stream).
    await page.waitForSelector('#log .line:has-text("error: ")');
    await shot('06-run-failed');
  });

  await step('the runs list shows both, newest first, filterable', async () => {
    await page.goto(`${base}/`);
    const ids = await page.$$eval('#runs-list tr[data-run]', (r) => r.map((x) => x.dataset.run));
    assert(ids[0] === failId && ids[1] === slowId, ids.join(','));
    await shot('07-runs-list');
    await page.selectOption('select[name="status"]', 'failed');
    await page.waitForURL(/status=failed/);
    const only = await page.$$eval('#runs-list tr[data-run]', (r) => r.map((x) => x.dataset.status));
    assert(only.length === 1 && only[0] === 'failed', only.join(','));
  });

  await step('pipelines page lists the pipelines with their last runs', async () => {
    await page.goto(`${base}/pipelines`);
    await page.waitForSelector('tr[data-pipeline="slow"]');
    await page.waitForSelector('tr[data-pipeline="slow-fail"]');
    await shot('08-pipelines');
  });

  await step('an unknown run is a 404 page', async () => {
    const res = await page.goto(`${base}/runs/run-does-not-exist`);
    assert(res.status() === 404, `status ${res.status()}`);
    await page.waitForSelector('#not-found');
    await shot('09-not-found');
  });

  await step('the JSON API answers scripts', async () => {
    const list = await (await fetch(`${base}/api/runs?pipeline=slow`)).json();
    assert(list.total === 1 && list.runs[0].status === 'success', JSON.stringify(list).slice(0, 300));
    const logs = await (await fetch(`${base}/api/runs/${slowId}/jobs/prepare/logs?after=14`)).json();
    assert(logs.records.length === 2, JSON.stringify(logs));
  });

  await step('a waiting gate is approved with its button', async () => {
    const run = startRun('gated', 'run-gated');
    await page.goto(`${base}/runs?pipeline=gated`);
    await page.waitForSelector('#runs-list tr[data-run]', { timeout: T.appear });
    const gatedId = await page.getAttribute('#runs-list tr[data-run]', 'data-run');
    await page.goto(`${base}/runs/${gatedId}`);
    await page.waitForSelector('[data-gate-id="approve"] button[data-gate-decision="approve"]', { timeout: T.run });
    assert((await page.textContent('[data-gate-id="approve"]')).includes('Ship it?'), 'no message');
    await shot('10-gate-waiting');
    await page.fill('[data-gate-id="approve"] .gate-comment', 'looks good');
    await page.click('[data-gate-id="approve"] button[data-gate-decision="approve"]');
    await page.waitForSelector('[data-gate-id="approve"] .gate-decided[data-decision="approve"]');
    assert((await page.textContent('[data-gate-id="approve"] .gate-decided')).includes(': looks good'), 'no comment');
    await page.waitForSelector('#run-status[data-state="success"]', { timeout: T.run });
    await page.waitForSelector('svg.dag .node[data-job="deploy"][data-state="success"]');
    assert((await run.done) === 0, 'sparkwing run gated did not exit 0');
    await shot('11-gate-approved');
    const st = JSON.parse(sw(['runs', 'status', gatedId, '-o', 'json']).out);
    assert(st.gates[0].decided.comment === 'looks good', JSON.stringify(st.gates));
  });

  await step('dashboard kill stops it; status then exits 1', async () => {
    const k = sw(['dashboard', 'kill']);
    assert(k.code === 0, `kill exited ${k.code}: ${k.err}`);
    const s = sw(['dashboard', 'status']);
    assert(s.code === 1, `status exited ${s.code}`);
  });
} catch (e) {
  exitCode = 1;
} finally {
  if (context) await context.close().catch(() => {});
  sw(['dashboard', 'kill']);
  console.log(`artifacts: ${artifacts}`);
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(exitCode || (failed ? 1 : 0));
}
