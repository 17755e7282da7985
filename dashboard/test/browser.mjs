// Drives the dashboard of a running ferroserve in Debian's chromium (puppeteer-core, no
// downloaded browser), for tests/dashboard.rs:
//
//   node dashboard/test/browser.mjs CONTROL_URL SCREENSHOT_DIR ENDPOINT BACKEND=WEIGHT,...
//   node dashboard/test/browser.mjs CONTROL_URL SCREENSHOT_DIR --token TOKEN
//   node dashboard/test/browser.mjs CONTROL_URL SCREENSHOT_DIR --cluster NODES
//
// It reads what the page shows (endpoints, backends, replicas, and the Cluster panel if
// shown), waits for the charts of ENDPOINT to have points, changes ENDPOINT's traffic
// weights through the page's form and its confirmation, and prints one JSON line: what it
// saw, for the Rust test to compare with /api/status. With `--token`, the page must ask
// for TOKEN first, and it stops after the tables; with `--cluster`, it waits for the
// Cluster panel to list NODES nodes and stops there. Screenshots go to SCREENSHOT_DIR.
// Any step that takes too long fails.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import puppeteer from 'puppeteer-core';

const [controlUrl, shots, endpoint, weightsArg] = process.argv.slice(2);
if (!controlUrl || !shots || !endpoint || !weightsArg) {
  console.error('usage: browser.mjs CONTROL_URL SCREENSHOT_DIR (ENDPOINT BACKEND=WEIGHT,... | --token TOKEN | --cluster NODES)');
  process.exit(2);
}
// With `--token TOKEN`, the server asks for one: the page must ask for it, then load.
const token = endpoint === '--token' ? weightsArg : null;
// With `--cluster NODES`, a node of a cluster: the Cluster panel must list NODES nodes.
const clusterNodes = endpoint === '--cluster' ? Number(weightsArg) : null;
const weights =
  token || clusterNodes != null ? {} : Object.fromEntries(weightsArg.split(',').map((pair) => pair.split('=')));
const chromium = process.env.FERROSERVE_CHROMIUM || '/usr/bin/chromium';
const STEP_MS = 20000;

// The whole run is bounded, whatever hangs.
const deadline = setTimeout(() => {
  console.error('browser.mjs: gave up after 90 s');
  process.exit(3);
}, 90000);

/** Thrown to end the steps early, with no problem. */
class Done extends Error {}

mkdirSync(shots, { recursive: true });
const browser = await puppeteer.launch({
  executablePath: chromium,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'],
  protocolTimeout: STEP_MS,
});
const problems = [];
const out = {};
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(STEP_MS);
  await page.setViewport({ width: 1440, height: 900 });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  // An API answering 404 or 4xx is the page's to show, not a problem; a script error is.
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) {
      problems.push(`console error: ${m.text()}`);
    }
  });
  page.on('requestfailed', (r) => {
    const why = r.failure()?.errorText || '';
    if (!why.includes('ERR_ABORTED')) problems.push(`request failed: ${r.url()} ${why}`);
  });

  await page.goto(`${controlUrl}/`, { waitUntil: 'load' });
  if (token) {
    await page.waitForSelector('#token[open] #token-input');
    out.askedForToken = true;
    await page.screenshot({ path: join(shots, 'token.png') });
    await page.type('#token-input', token);
    await page.click('#token-ok');
  }
  await page.waitForSelector('body[data-loaded="yes"] #endpoints tbody tr');
  await page.waitForSelector('#backends tbody tr', { visible: false });

  // What the tables show (hidden tabs included: their rows are in the page).
  out.tables = await page.evaluate(() => {
    const cells = (table) =>
      [...document.querySelectorAll(`#${table} tbody tr`)].map((tr) =>
        Object.fromEntries([...tr.children].map((td) => [td.dataset.col, td.textContent.trim()])),
      );
    return { endpoints: cells('endpoints'), backends: cells('backends'), replicas: cells('replicas') };
  });

  // The Cluster panel, shown in cluster mode only (the page has rendered /api/status by now).
  if (clusterNodes != null) {
    await page.waitForFunction(
      (n) => !document.querySelector('#cluster-box').hidden &&
        document.querySelectorAll('#cluster-nodes tbody tr').length === n,
      { timeout: STEP_MS, polling: 100 },
      clusterNodes,
    );
  }
  out.cluster = await page.evaluate(() => {
    const box = document.querySelector('#cluster-box');
    if (!box || box.hidden) return null;
    const text = (selector) => {
      const e = box.querySelector(selector);
      return e && !e.hidden ? e.textContent.trim() : null;
    };
    return {
      summary: text('#cluster-summary'),
      facts: Object.fromEntries(
        [...box.querySelectorAll('#cluster-facts dd')].map((dd) => [dd.dataset.fact, dd.textContent.trim()]),
      ),
      applyError: text('#cluster-apply-error'),
      unplaced: text('#cluster-unplaced'),
      nodes: [...box.querySelectorAll('#cluster-nodes tbody tr')].map((tr) => ({
        name: tr.dataset.name,
        leader: tr.classList.contains('leader'),
        marks: [...tr.querySelectorAll('td[data-col="name"] .pill')].map((p) => p.textContent),
        ...Object.fromEntries(
          [...tr.children]
            .filter((td) => td.dataset.col !== 'name')
            .map((td) => [td.dataset.col, td.textContent.trim()]),
        ),
      })),
    };
  });
  if (clusterNodes != null) {
    await page.screenshot({ path: join(shots, 'cluster.png') });
    throw new Done();
  }

  if (token) throw new Done();

  // The endpoint's page: its charts fill from /api/series.
  await page.click(`#endpoints tbody tr[data-name="${endpoint}"]`);
  await page.waitForSelector('#traffic-form:not([hidden]) input[data-backend]');
  const points = (id) => page.$eval(id, (e) => Number(e.dataset.points || 0));
  try {
    await page.waitForFunction(
      () => Number(document.querySelector('#chart-rps').dataset.points) > 0 &&
        Number(document.querySelector('#chart-overall').dataset.points) > 1,
      { timeout: STEP_MS, polling: 200 },
    );
  } catch {
    out.seriesNote = await page.$eval('#series-note', (e) => e.textContent);
  }
  out.points = {
    overall: await points('#chart-overall'),
    rps: await points('#chart-rps'),
    latency: await points('#chart-latency'),
  };
  out.columns = await page.$eval(`#endpoints tbody tr[data-name="${endpoint}"] td[data-col="rps"]`, (e) => e.textContent);
  await page.screenshot({ path: join(shots, 'dashboard.png') });

  // Change the weights in the form, confirm, and wait for the answer.
  for (const [backend, weight] of Object.entries(weights)) {
    let input = await page.$(`#traffic-rows input[data-backend="${backend}"]`);
    if (!input) {
      await page.select('#traffic-add', backend);
      await page.click('#traffic-add-button');
      input = await page.waitForSelector(`#traffic-rows input[data-backend="${backend}"]`);
    }
    await input.evaluate((e) => (e.value = ''));
    await input.type(String(weight));
  }
  out.preview = await page.$eval('#traffic-preview', (e) => e.textContent);
  await page.click('#traffic-apply');
  await page.waitForSelector('#confirm[open]');
  out.confirmText = await page.$eval('#confirm-text', (e) => e.textContent);
  await page.screenshot({ path: join(shots, 'confirm-traffic.png') });
  await page.click('#confirm-ok');
  await page.waitForSelector('#result[data-outcome]:not([hidden])');
  out.result = await page.$eval('#result', (e) => ({
    outcome: e.dataset.outcome,
    text: e.querySelector('#result-text').textContent,
  }));
  await page.screenshot({ path: join(shots, 'traffic-changed.png') });
  await page.click('#result-close');

  // A backend's page, with its replicas, and one replica's logs.
  const backend = Object.keys(weights)[0];
  await page.click('#tabs [data-tab="backends"]');
  await page.click(`#backends tbody tr[data-name="${backend}"]`);
  await page.waitForSelector('#scale-form:not([hidden])');
  await page.waitForSelector('#selected-replicas tbody tr');
  await page.screenshot({ path: join(shots, 'backend.png') });
  await page.click('#selected-replicas tbody button[data-replica]');
  await page.waitForFunction(() => {
    const pre = document.querySelector('#logs-lines');
    return document.querySelector('#logs').open && pre.textContent && pre.textContent !== 'Loading…';
  });
  out.logs = await page.$eval('#logs-lines', (e) => e.textContent);
  await page.screenshot({ path: join(shots, 'logs.png') });
} catch (e) {
  if (!(e instanceof Done)) problems.push(`step failed: ${e.message}`);
} finally {
  out.problems = [...problems]; // what happens while the browser closes does not count
  await browser.close();
  clearTimeout(deadline);
}
console.log(JSON.stringify(out));
