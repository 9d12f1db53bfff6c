// Drives two headless Chromium pages through the chat's HTML page, each page on its own host:
// bob (host B) says hello, ada (host A) sees it and replies, bob sees the reply, then bob starts
// typing and ada sees "bob is typing…", both members online, and 2 unread in another room where
// bob wrote. Saves a screenshot of ada's page.
//
//   node tests/chat-browser.mjs CHROMIUM PAGE_URL_A PAGE_URL_B SCREENSHOT.png
//
// puppeteer-core comes from $PUPPETEER_TOOLS/node_modules (tests/chat.rs installs the pinned
// version there). Prints one JSON line of timings; any failure exits non-zero with the reason.

import { createRequire } from 'node:module';
import { join } from 'node:path';

const [chromium, urlA, urlB, screenshot] = process.argv.slice(2);
const require = createRequire(join(process.env.PUPPETEER_TOOLS, 'package.json'));
const puppeteer = require('puppeteer-core');

/** How long any one expectation may take: a long poll answers within a second of a post. */
const STEP_TIMEOUT_MS = 10000;

const browser = await puppeteer.launch({
  executablePath: chromium,
  headless: true,
  // No sandbox: the tests run as root in CI. Background pages must keep their timers running,
  // since both pages poll while only one can be in front.
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-dev-shm-usage',
    '--disable-background-timer-throttling',
    '--disable-renderer-backgrounding',
    '--disable-backgrounding-occluded-windows',
  ],
});

/** Opens `url` in its own browser context (no shared storage) and joins `room` as `name`. */
async function joinAs(url, name, room) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  await page.setViewport({ width: 820, height: 460 });
  page.on('pageerror', (error) => console.error(`${name}: page error: ${error.message}`));
  await page.goto(url, { waitUntil: 'load' });
  await page.type('#name', name);
  await page.$eval('#room', (input) => { input.value = ''; });
  await page.type('#room', room);
  await page.click('#login button');
  await page.waitForSelector('#chat:not([hidden])', { timeout: STEP_TIMEOUT_MS });
  return page;
}

/** Waits until `page` shows a message containing `text`; returns the milliseconds it took. */
async function waitForMessage(page, text) {
  const started = Date.now();
  await page.waitForFunction(
    (wanted) => [...document.querySelectorAll('#messages li')].some((li) => li.textContent.includes(wanted)),
    { timeout: STEP_TIMEOUT_MS },
    text,
  );
  return Date.now() - started;
}

async function send(page, text) {
  await page.type('#text', text);
  await page.click('#send button');
}

try {
  const ada = await joinAs(urlA, 'ada', 'lobby');
  const bob = await joinAs(urlB, 'bob', 'lobby');

  await send(bob, 'hello from host B');
  const helloMs = await waitForMessage(ada, 'hello from host B');
  await send(ada, 'hi bob, ada here on host A');
  const replyMs = await waitForMessage(bob, 'hi bob, ada here on host A');

  await bob.type('#text', 'typing something');
  await ada.waitForFunction(
    () => document.getElementById('typing').textContent.includes('bob is typing'),
    { timeout: STEP_TIMEOUT_MS },
  );
  await ada.waitForFunction(
    () => document.querySelectorAll('#members li.online').length === 2,
    { timeout: STEP_TIMEOUT_MS },
  );
  // Bob also talks in a room ada joined but is not looking at: her page shows it unread.
  await bob.evaluate(async () => {
    const post = (path, body) => fetch(path, { method: 'POST', body: JSON.stringify(body) });
    await post('rooms/random/join', { user: 'ada' });
    await post('rooms/random/messages', { user: 'bob', text: 'psst, over here' });
    await post('rooms/random/messages', { user: 'bob', text: 'ada?' });
  });
  await ada.waitForFunction(
    () => document.querySelector('#rooms .badge')?.textContent === '2',
    { timeout: STEP_TIMEOUT_MS },
  );
  await ada.bringToFront();
  await ada.screenshot({ path: screenshot });
  console.log(JSON.stringify({ hello_seen_on_a_ms: helloMs, reply_seen_on_b_ms: replyMs, screenshot }));
} finally {
  await browser.close();
}
