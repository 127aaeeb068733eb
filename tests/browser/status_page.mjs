// Drives Debian's Chromium through Playwright for
// tests/tests/status_page_shows_routes_live_in_a_browser.rs, which starts this script and
// talks to it in lines:
//   args:    URL of the status page, path of the screenshot to save
//   stdout:  {"event":"loaded", ...}  once the page is shown (its text, the CSP header, ...)
//   stdin:   {"cidr": C, "router": R, "failed": F}  what the page should come to show:
//            every cell of C on R, and F marked failed in the routers list
//   stdout:  {"event":"result", ...}  what the browser saw (the Rust side judges it)
//   stdin:   {"cidr": C, "drained": R}  every cell of C should come to be marked drained (on R)
//   stdout:  {"event":"marked", ...}  what the browser saw; then the screenshots (desktop, and a
//            phone's width) are saved and the phone's widths measured
//   stdout:  {"event":"error", "message": ...}  on any failure
// Every wait is bounded; the whole script gives up after DEADLINE_MS.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const DEADLINE_MS = 120000;
const UPDATE_MS = 20000;
const [url, screenshot] = process.argv.slice(2);

function say(event, fields) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + '\n');
}

const lines = createInterface({ input: process.stdin });
const pending = [];
lines.on('line', (line) => pending.push(line));
async function nextLine(timeoutMs) {
  const end = Date.now() + timeoutMs;
  while (pending.length === 0) {
    if (Date.now() > end) throw new Error(`no instruction on stdin within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return pending.shift();
}

// What the page shows now: the text of <main>, the cells and the routers.
async function shown(page) {
  return page.evaluate(() => ({
    text: document.getElementById('main').textContent,
    live: document.getElementById('live').textContent,
    cells: [...document.querySelectorAll('table.matrix tbody tr')].map((tr) => ({
      dest: tr.dataset.dest,
      routers: [...tr.querySelectorAll('td')].map((td) => td.dataset.router || null),
      marks: [...tr.querySelectorAll('td')].map((td) => td.className),
    })),
    routers: [...document.querySelectorAll('table.routers tbody tr')].map((tr) => ({
      ip: tr.dataset.router,
      class: tr.className,
      text: tr.textContent,
    })),
    tables: [...document.querySelectorAll('table.matrix thead th[data-rtb]')].map((th) => th.dataset.rtb),
  }));
}

async function run(userDataDir) {
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--disable-quic'],
    viewport: { width: 1200, height: 800 },
    timeout: 30000,
  });
  try {
    const page = context.pages()[0] || (await context.newPage());
    page.setDefaultTimeout(15000);
    const requests = [];
    const problems = [];
    let loads = 0;
    let navigations = 0;
    page.on('request', (r) => requests.push(r.url()));
    page.on('load', () => { loads += 1; });
    page.on('framenavigated', (f) => { if (f === page.mainFrame()) navigations += 1; });
    page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') problems.push(m.text()); });
    page.on('pageerror', (e) => problems.push(String(e)));

    const response = await page.goto(url, { waitUntil: 'load' });
    const csp = response.headers()['content-security-policy'] || null;
    await page.waitForFunction(() => document.getElementById('live').textContent.startsWith('live'), null,
      { timeout: 10000 });
    await page.evaluate(() => { window.__noReload = 1; });
    say('loaded', { status: response.status(), csp, ...(await shown(page)) });

    const want = JSON.parse(await nextLine(60000));
    const started = Date.now();
    await page.waitForFunction(({ cidr, router, failed }) => {
      const row = document.querySelector(`table.matrix tbody tr[data-dest="${cidr}"]`);
      const cells = row ? [...row.querySelectorAll('td')] : [];
      const moved = cells.length > 0 && cells.every((td) => td.dataset.router === router);
      const marked = document.querySelector(`table.routers tr.failed[data-router="${failed}"]`);
      return moved && marked !== null;
    }, want, { timeout: UPDATE_MS, polling: 100 });
    const updatedAfterMs = Date.now() - started;
    const after = await shown(page);
    const noReload = await page.evaluate(() => window.__noReload === 1);
    say('result', {
      ...after, updatedAfterMs, noReload, loads, navigations, requests, problems, origin: new URL(url).origin,
    });

    const drain = JSON.parse(await nextLine(60000));
    await page.waitForFunction(({ cidr, drained }) => {
      const row = document.querySelector(`table.matrix tbody tr[data-dest="${cidr}"]`);
      const cells = row ? [...row.querySelectorAll('td')] : [];
      return cells.length > 0 && cells.every((td) => td.dataset.router === drained && td.classList.contains('drained'));
    }, drain, { timeout: UPDATE_MS, polling: 100 });
    const marked = await shown(page);
    await page.screenshot({ path: screenshot, fullPage: true });
    await page.setViewportSize({ width: 390, height: 844 });
    await page.screenshot({ path: screenshot.replace(/\.png$/, '-phone.png'), fullPage: true });
    const phone = await page.evaluate(() => ({
      scrollWidth: document.documentElement.scrollWidth,
      innerWidth: window.innerWidth,
    }));
    const stillNoReload = await page.evaluate(() => window.__noReload === 1);
    say('marked', { ...marked, phone, noReload: stillNoReload, loads, navigations, requests, problems });
  } finally {
    await context.close();
  }
}

const userDataDir = mkdtempSync(join(tmpdir(), 'vpcrouter-chromium-'));
const giveUp = setTimeout(() => {
  say('error', { message: `the browser script did not finish within ${DEADLINE_MS} ms` });
  process.exit(3);
}, DEADLINE_MS);
try {
  await run(userDataDir);
} catch (e) {
  say('error', { message: String(e && e.stack ? e.stack : e) });
  process.exitCode = 1;
} finally {
  clearTimeout(giveUp);
  lines.close();
  process.stdin.destroy();
  rmSync(userDataDir, { recursive: true, force: true });
}
