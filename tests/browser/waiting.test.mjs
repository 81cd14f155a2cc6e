// A waiting second factor (plugin contract 0.2 `waiting`, issue #18 item 3) in headless Chromium:
// the reference plugin `approve` (plugins/approve, on the SDK) starts a push approval with number matching at a small HTTP
// approval service (tests/peers/approval_service.py); the test plays the approver's phone. An
// app's sign-in waits on the broker's page, which refreshes itself; the approval with the shown
// number signs in (with JavaScript: by itself, under the CSP; without: the user presses
// "Continue"), the app's ID token (openid-client) carries the factor's amr, and a wrong number is
// refused with the user offered a new request.
//
//   node --test --test-concurrency=1 tests/browser/waiting.test.mjs

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { homedir } from 'node:os';
import { existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import * as client from 'openid-client';
import {
  startProvider,
  startCallbackServer,
  launchBrowser,
  sessionCookie,
  sha256Hex,
  pluginManifest,
  mfaToml,
  REPO_ROOT,
  authorizationRequest,
} from './helpers.mjs';

const SECRET = randomBytes(24).toString('base64url');

function python() {
  if (process.env.CONCIERGE_TEST_PYTHON) return process.env.CONCIERGE_TEST_PYTHON;
  const venv = join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'concierge', 'pyvenv', 'bin', 'python');
  return existsSync(venv) ? venv : 'python3';
}

/** The approval service on 127.0.0.1: { origin, inbox(user), act(id, action, number), stop() }. */
async function startApprovalService() {
  const child = spawn(python(), [join(REPO_ROOT, 'tests', 'peers', 'approval_service.py')], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await new Promise((res, rej) => {
    child.stdout.once('data', (d) => res(Number(String(d).trim())));
    child.once('exit', (code) => rej(new Error(`approval service exited ${code}`)));
  });
  const origin = `http://127.0.0.1:${port}`;
  return {
    origin,
    async inbox(user) {
      const r = await fetch(`${origin}/inbox?user=${encodeURIComponent(user)}`);
      return r.json();
    },
    async act(id, action, number = '') {
      const r = await fetch(`${origin}/approvals/${id}/${action}`, {
        method: 'POST',
        body: new URLSearchParams({ number }),
      });
      assert.equal(r.status, 204);
    },
    stop() {
      child.kill('SIGTERM');
    },
  };
}

/** A page that records errors (CSP violations are console errors in Chromium). */
async function watchedPage(context) {
  const page = await context.newPage();
  const problems = [];
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push(m.text());
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  return { page, problems };
}

describe('a waiting factor: push approval with number matching', () => {
  let provider;
  let service;
  let callback;
  let browser;
  let app;

  before(async () => {
    service = await startApprovalService();
    callback = await startCallbackServer('/cb');
    const plugin = pluginManifest('approve', {
      grants: ['random', 'http'],
      config: { service: service.origin },
    });
    provider = await startProvider({
      clients: [{ id: 'webapp', name: 'Web App', secret_sha256: sha256Hex(SECRET), redirect_uris: [callback.url] }],
      extraToml: [
        mfaToml({ settings: { required: 'required' }, plugins: [`${plugin}\n\n[mfa.plugins.http]\norigins = ["${service.origin}"]`] }),
      ].join('\n\n'),
    });
    browser = await launchBrowser();
    const config = await client.discovery(new URL(provider.issuer), 'webapp', undefined, client.ClientSecretBasic(SECRET), {
      execute: [client.allowInsecureRequests],
    });
    app = {
      request: () => authorizationRequest(config, callback.url, { scope: 'openid email' }),
      redeem: async (req, url) =>
        (await client.authorizationCodeGrant(config, url, {
          pkceCodeVerifier: req.pkceCodeVerifier,
          expectedState: req.expectedState,
          expectedNonce: req.expectedNonce,
        })).claims(),
    };
  });

  after(async () => {
    await browser?.close();
    await provider?.stop();
    await callback?.close();
    service?.stop();
  });

  /** The app's sign-in up to the waiting page: the number shown and the approval on the phone. */
  async function toWaitingPage(page) {
    const req = await app.request();
    await page.goto(req.url.href);
    await page.fill('#email', provider.email);
    await page.fill('#password', provider.password);
    await page.click('#login-submit');
    await page.locator('main#mfa-wait').waitFor({ timeout: 10_000 }).catch(async (e) => {
      throw new Error(`${e.message}\nat ${page.url()}:\n${(await page.content()).slice(0, 3000)}`);
    });
    const shown = (await page.locator('#mfa-number').innerText()).trim();
    const inbox = await service.inbox(provider.email);
    const approval = inbox.at(-1);
    assert.ok(approval.choices.includes(shown), `${shown} among ${approval.choices}`);
    return { req, shown, approval };
  }

  it('with JavaScript the page waits under the CSP and goes on by itself once the right number is picked', async () => {
    const context = await browser.newContext();
    try {
      const { page, problems } = await watchedPage(context);
      const { req, shown, approval } = await toWaitingPage(page);
      assert.equal(await sessionCookie(context), undefined, 'no session while waiting');
      const arrived = callback.next({ timeoutMs: 20_000 });
      await service.act(approval.id, 'pick', shown);
      const back = await arrived;
      const claims = await app.redeem(req, back);
      assert.ok(claims.amr.includes('swk') && claims.amr.includes('mfa'), JSON.stringify(claims.amr));
      assert.deepEqual(problems, [], 'no CSP violation or script error');
    } finally {
      await context.close();
    }
  });

  it('without JavaScript the page refreshes itself, and "Continue" goes on once approved; a wrong number is refused', async () => {
    const context = await browser.newContext({ javaScriptEnabled: false });
    try {
      const { page } = await watchedPage(context);
      // A wrong number: the page's next refresh says so, and offers a new request.
      const first = await toWaitingPage(page);
      const wrong = first.approval.choices.find((c) => c !== first.shown);
      await service.act(first.approval.id, 'pick', wrong);
      await page.locator('#mfa-error').waitFor({ timeout: 10_000 });
      assert.match(await page.locator('#mfa-error').innerText(), /wrong number/);
      assert.equal(await sessionCookie(context), undefined);
      await page.click('#mfa-resend');
      await page.locator('#mfa-number').waitFor({ timeout: 10_000 });
      const shown = (await page.locator('#mfa-number').innerText()).trim();
      const approval = (await service.inbox(provider.email)).at(-1);
      assert.notEqual(approval.id, first.approval.id, 'a new request');
      await service.act(approval.id, 'pick', shown);
      // The refresh finds it approved; without a script nothing goes on by itself.
      await page.locator('#mfa-approved').waitFor({ timeout: 10_000 });
      assert.equal(await sessionCookie(context), undefined, 'a GET never signs in');
      const arrived = callback.next({ timeoutMs: 20_000 });
      await page.click('#mfa-continue');
      const back = await arrived;
      const claims = await app.redeem(first.req, back);
      assert.ok(claims.amr.includes('mfa'), JSON.stringify(claims.amr));
    } finally {
      await context.close();
    }
  });
});
