// Browser tests of session control: "your devices" (en/ko, end one, end the others, an older
// session disappearing at the limit), the session-limit page of the refuse policy, and the
// lockout message. Real Chromium through the real pages; see helpers.mjs.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  startBroker,
  launchBrowser,
  withLogs,
  loginViaPage,
  accountStatus,
  backend,
  REPO_ROOT,
  sleep,
} from './helpers.mjs';

const strings = (lang) =>
  JSON.parse(readFileSync(join(REPO_ROOT, 'templates', 'locales', `${lang}.json`), 'utf8'));
const EN = strings('en');
const KO = strings('ko');

/** The sids listed on the devices page, in page order. */
async function listedSids(page) {
  return page.$$eval('#device-list li[data-sid]', (lis) => lis.map((li) => li.dataset.sid));
}

/** Signs in a fresh context (its own cookies: a device of its own); returns { context, page }. */
async function device(browser, base, opts = {}) {
  const context = await browser.newContext(opts);
  const page = await context.newPage();
  const res = await loginViaPage(page, base);
  return { context, page, res };
}

describe(`your devices (${backend})`, () => {
  let broker;
  let browser;
  before(async () => {
    broker = await startBroker({ env: { CONCIERGE__SESSION__MAX_PER_USER: '2' } });
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await broker?.stop();
  });
  const test = (name, fn) => it(name, { timeout: 60_000 }, withLogs(() => broker, fn));

  test('lists every session, ends one, and the oldest disappears at the limit', async (t) => {
    const laptop = await device(browser, broker.url, { userAgent: 'Laptop/1.0' });
    t.after(() => laptop.context.close());
    await sleep(1_100); // whole-second sign-in times: keep the order unambiguous
    const phone = await device(browser, broker.url, { userAgent: 'Phone/2.0' });
    t.after(() => phone.context.close());

    await phone.page.goto(`${broker.url}/account`);
    assert.equal(await phone.page.textContent('#devices'), EN.devices_heading);
    const rows = await listedSids(phone.page);
    assert.equal(rows.length, 2);
    const current = phone.page.locator('#device-list li.device-current');
    assert.match(await current.textContent(), /Phone\/2\.0/);
    assert.match(await current.textContent(), new RegExp(EN.devices_current));
    const other = phone.page.locator('#device-list li:not(.device-current)');
    assert.match(await other.textContent(), /Laptop\/1\.0/);
    for (const field of ['channel', 'user_agent', 'ip', 'auth_time', 'last_seen']) {
      assert.ok((await other.locator(`[data-field="${field}"]`).textContent()).trim(), field);
    }

    // A third sign-in with a limit of 2: the oldest (the laptop) disappears from the list.
    await sleep(1_100);
    const tablet = await device(browser, broker.url, { userAgent: 'Tablet/3.0' });
    t.after(() => tablet.context.close());
    await phone.page.reload();
    const after = await phone.page.locator('#device-list').textContent();
    assert.doesNotMatch(after, /Laptop\/1\.0/, 'the oldest session is gone');
    assert.match(after, /Tablet\/3\.0/);
    assert.equal((await accountStatus(laptop.context, broker.url)).status, 303);

    // End the tablet from the phone.
    await phone.page.locator('#device-list li:not(.device-current) button.device-end').click();
    await phone.page.waitForURL(`${broker.url}/account#devices`);
    assert.equal((await listedSids(phone.page)).length, 1);
    assert.equal((await accountStatus(tablet.context, broker.url)).status, 303, 'the tablet is signed out');
    assert.equal((await accountStatus(phone.context, broker.url)).status, 200);
  });

  test('"sign out all other devices", in Korean, on a 360 px screen', async (t) => {
    const a = await device(browser, broker.url);
    t.after(() => a.context.close());
    const ko = await device(browser, broker.url, {
      locale: 'ko-KR',
      viewport: { width: 360, height: 740 },
    });
    t.after(() => ko.context.close());
    await ko.page.goto(`${broker.url}/account`);
    assert.equal(await ko.page.textContent('#devices'), KO.devices_heading);
    assert.equal((await ko.page.textContent('#end-others-submit')).trim(), KO.devices_end_others);
    const overflow = await ko.page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(overflow <= 360, `no horizontal scrolling at 360 px (scrollWidth ${overflow})`);
    await ko.page.click('#end-others-submit');
    await ko.page.waitForURL(`${broker.url}/account#devices`);
    assert.equal((await listedSids(ko.page)).length, 1);
    assert.equal(await ko.page.locator('#end-others-form').count(), 0, 'nothing left to end');
    assert.equal((await accountStatus(a.context, broker.url)).status, 303);
  });
});

describe(`session limit, refuse policy (${backend})`, () => {
  let broker;
  let browser;
  before(async () => {
    broker = await startBroker({
      env: {
        CONCIERGE__SESSION__MAX_PER_USER: '1',
        CONCIERGE__SESSION__ON_LIMIT: 'refuse',
      },
    });
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await broker?.stop();
  });
  const test = (name, fn) => it(name, { timeout: 60_000 }, withLogs(() => broker, fn));

  test('the sign-in stops at a page listing the sessions; ending one continues', async (t) => {
    const first = await device(browser, broker.url, { userAgent: 'First/1.0' });
    t.after(() => first.context.close());
    const second = await device(browser, broker.url, { userAgent: 'Second/1.0' });
    t.after(() => second.context.close());
    const page = second.page;
    await page.locator('#session-limit').waitFor();
    assert.equal(await page.textContent('#session-limit-heading'), EN.session_limit_heading);
    assert.match(await page.locator('#limit-list').textContent(), /First\/1\.0/);
    assert.equal((await accountStatus(second.context, broker.url)).status, 303, 'not signed in yet');
    assert.equal((await accountStatus(first.context, broker.url)).status, 200, 'nobody signed out yet');

    await page.click('#limit-list button.limit-end');
    await page.waitForURL(`${broker.url}/account`);
    assert.equal((await accountStatus(second.context, broker.url)).status, 200);
    assert.equal((await accountStatus(first.context, broker.url)).status, 303, 'the chosen session ended');
  });
});

describe(`brute-force lockout (${backend})`, () => {
  let broker;
  let browser;
  before(async () => {
    broker = await startBroker({
      env: {
        CONCIERGE__RATE_LIMIT__LOCKOUT_AFTER: '2',
        CONCIERGE__RATE_LIMIT__LOCKOUT_DELAY: '1m',
      },
    });
    browser = await launchBrowser({ locale: 'ko-KR' });
  });
  after(async () => {
    await browser?.close();
    await broker?.stop();
  });
  const test = (name, fn) => it(name, { timeout: 60_000 }, withLogs(() => broker, fn));

  test('failures lock the account with a clear message and Retry-After', async (t) => {
    const context = await browser.newContext();
    t.after(() => context.close());
    const page = await context.newPage();
    let res = await loginViaPage(page, broker.url, { password: 'wrong-1' });
    assert.equal(res.status(), 401);
    assert.equal((await page.textContent('#login-error')).trim(), KO.error_invalid_credentials);
    res = await loginViaPage(page, broker.url, { password: 'wrong-2' });
    assert.equal(res.status(), 429);
    assert.equal(res.headers()['retry-after'], '60');
    assert.equal((await page.textContent('#login-error')).trim(), KO.error_locked_out);
    res = await loginViaPage(page, broker.url);
    assert.equal(res.status(), 429, 'the right password waits too');
    assert.equal((await accountStatus(context, broker.url)).status, 303);
  });
});
