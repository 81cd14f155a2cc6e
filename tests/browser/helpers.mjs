// Shared helpers for the browser suite: start a broker on a fresh database, drive Debian's Chromium
// through playwright-core, and a few HTTP helpers for requests a browser would never send.
//
// Environment:
//   CONCIERGE_BIN          path to the built `concierge` binary (default: <repo>/target/debug/concierge,
//                          or $CARGO_TARGET_DIR/debug/concierge)
//   CONCIERGE_TEST_BACKEND sqlite (default) | postgres
//   CONCIERGE_TEST_PG_URL  admin URL of a PostgreSQL server (required for postgres); each broker
//                          gets its own fresh database created from it
//   CONCIERGE_TEST_CHROMIUM  browser executable (default /usr/bin/chromium)
//   CONCIERGE_TEST_PLUGIN_DIR  built MFA plugins (default <repo>/plugins/dist, what plugins/build.sh
//                          writes)
//   CONCIERGE_TEST_PYTHON  python with aiosmtpd for the SMTP sink (default
//                          ~/.cache/concierge/pyvenv/bin/python when it exists, else python3)

import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, existsSync, writeFileSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { createServer as createHttpServer } from 'node:http';
import { tmpdir, homedir } from 'node:os';
import { join, resolve, dirname, isAbsolute } from 'node:path';
import { randomBytes, createHash } from 'node:crypto';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import * as oidcClient from 'openid-client';

export { sleep };

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SESSION_COOKIE = 'concierge_session';
export const CSRF_COOKIE = 'concierge_csrf';
export const DEMO_EMAIL = 'demo@example.com';
export const DEMO_PASSWORD = 'demo';

/** Words that must never reach a user: they mean an internal error leaked into a page. */
export const LEAK_PATTERN = /panicked|diesel|src\/|\.rs:\d|backtrace|RUST_BACKTRACE|thread '/i;

const BACKEND = (process.env.CONCIERGE_TEST_BACKEND || 'sqlite').toLowerCase();
if (BACKEND !== 'sqlite' && BACKEND !== 'postgres') {
  throw new Error(`CONCIERGE_TEST_BACKEND must be "sqlite" or "postgres", not "${BACKEND}"`);
}
export const backend = BACKEND;

function brokerBinary() {
  if (process.env.CONCIERGE_BIN) {
    const bin = process.env.CONCIERGE_BIN;
    return isAbsolute(bin) ? bin : resolve(process.cwd(), bin);
  }
  const target = process.env.CARGO_TARGET_DIR
    ? resolve(REPO_ROOT, process.env.CARGO_TARGET_DIR)
    : join(REPO_ROOT, 'target');
  return join(target, 'debug', 'concierge');
}

/** A free TCP port on 127.0.0.1 (listen on port 0, read it, close). */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolvePort(port));
    });
  });
}

function psql(adminUrl, sql) {
  const r = spawnSync('psql', [adminUrl, '-v', 'ON_ERROR_STOP=1', '-qAt', '-c', sql], {
    encoding: 'utf8',
  });
  if (r.error) {
    throw new Error(`could not run psql (is the PostgreSQL client installed?): ${r.error.message}`);
  }
  if (r.status !== 0) {
    throw new Error(`psql failed (${r.status}) for: ${sql}\n${r.stderr}`);
  }
  return r.stdout;
}

/** Creates a fresh database for one broker; returns { url, drop() }. */
function freshDatabase(tmp) {
  if (BACKEND === 'sqlite') {
    return { url: `sqlite://${join(tmp, 'c.db')}`, drop() {} };
  }
  const admin = process.env.CONCIERGE_TEST_PG_URL;
  if (!admin) {
    // Fail loudly: a postgres run without a server must not look like a pass.
    throw new Error(
      'CONCIERGE_TEST_BACKEND=postgres but CONCIERGE_TEST_PG_URL is unset; ' +
        'run scripts/test.sh, which starts a private PostgreSQL and sets it',
    );
  }
  const name = `concierge_${randomBytes(6).toString('hex')}`;
  psql(admin, `CREATE DATABASE "${name}"`);
  const u = new URL(admin);
  u.pathname = `/${name}`;
  return {
    url: u.toString(),
    drop() {
      try {
        psql(admin, `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      } catch (e) {
        process.stderr.write(`warning: could not drop ${name}: ${e.message}\n`);
      }
    },
  };
}

const live = new Set();
process.on('exit', () => {
  for (const child of live) {
    try {
      child.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
});

/**
 * Starts `concierge serve` (no config file: demo mode) on a free loopback port and a fresh database.
 * `env` adds or overrides variables (e.g. CONCIERGE__SESSION__IDLE_TIMEOUT).
 * Returns { url, port, logs({ max }), stop() }; logs() keeps the last `max` characters (20 000).
 */
export async function startBroker({ env = {}, timeoutMs = 30_000 } = {}) {
  return launch({ env, timeoutMs });
}

/**
 * Starts a broker; `prepare({ bin, tmp, db, port, url, childEnv })`, when given, runs before the
 * broker does (e.g. writes a config file) and returns its arguments (default: `serve`).
 */
async function launch({ env = {}, timeoutMs = 30_000, prepare, port: fixedPort } = {}) {
  const bin = brokerBinary();
  if (!existsSync(bin)) {
    throw new Error(`broker binary not found at ${bin}; build it (cargo build -p concierge) or set CONCIERGE_BIN`);
  }
  const tmp = mkdtempSync(join(tmpdir(), 'concierge-browser-'));
  let db;
  try {
    db = freshDatabase(tmp);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  const port = fixedPort ?? (await freePort());
  const url = `http://127.0.0.1:${port}`;

  // Inherit the environment but none of the broker's own settings, so a developer's shell
  // cannot change what the tests see.
  const childEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('CONCIERGE__')) childEnv[k] = v;
  }
  Object.assign(childEnv, {
    RUST_BACKTRACE: '1',
    CONCIERGE__SERVER__BIND: `127.0.0.1:${port}`,
    CONCIERGE__DATABASE__URL: db.url,
    ...env,
  });

  let args = ['serve'];
  if (prepare) {
    try {
      args = await prepare({ bin, tmp, db, port, url, childEnv });
    } catch (e) {
      db.drop();
      rmSync(tmp, { recursive: true, force: true });
      throw e;
    }
  }

  const output = [];
  const child = spawn(bin, args, {
    cwd: REPO_ROOT,
    env: childEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(child);
  child.stdout.on('data', (d) => output.push(d.toString()));
  child.stderr.on('data', (d) => output.push(d.toString()));
  let exited = null;
  let stopping = false;
  const exitPromise = new Promise((res) => {
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      live.delete(child);
      if (!stopping) {
        output.push(`\n[helpers] broker exited unexpectedly: code=${code} signal=${signal}\n`);
      }
      res();
    });
    child.on('error', (err) => {
      exited = { code: null, signal: null, error: err };
      live.delete(child);
      output.push(`\n[helpers] could not start broker: ${err.message}\n`);
      res();
    });
  });

  const logs = ({ max = 20_000 } = {}) => {
    const text = output.join('');
    const shown = text.length > max ? `...(${text.length - max} chars cut)...\n${text.slice(-max)}` : text;
    return `--- broker (${bin} ${args.join(' ')}, ${BACKEND}, ${url}) output ---\n${shown}\n--- end of broker output ---`;
  };

  const cleanup = async () => {
    stopping = true;
    if (!exited) {
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exitPromise;
      clearTimeout(killer);
    }
    db.drop();
    rmSync(tmp, { recursive: true, force: true });
  };

  // Wait for /healthz.
  const deadline = Date.now() + timeoutMs;
  let lastError = 'no answer yet';
  for (;;) {
    if (exited) {
      await cleanup();
      throw new Error(`broker exited before it answered /healthz\n${logs()}`);
    }
    try {
      const r = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1_000) });
      if (r.status === 200) break;
      lastError = `status ${r.status}`;
    } catch (e) {
      lastError = e.cause?.code || e.message;
    }
    if (Date.now() > deadline) {
      await cleanup();
      throw new Error(`broker did not answer /healthz with 200 within ${timeoutMs} ms (${lastError})\n${logs()}`);
    }
    await sleep(100);
  }

  return {
    url,
    port,
    logs,
    get exited() {
      return exited;
    },
    stop: cleanup,
  };
}

/** Password of the account startProvider creates (the CLI wants at least 8 characters). */
export const PROVIDER_PASSWORD = 'demo-password-1';

/** Hex SHA-256 of a string: what a client's `secret_sha256` holds. */
export function sha256Hex(text) {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

/** A TOML value (strings, numbers, booleans and arrays of them). */
function tomlValue(v, key) {
  if (typeof v === 'string') return JSON.stringify(v); // a TOML basic string
  if (typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v))) return String(v);
  if (Array.isArray(v)) return `[${v.map((x) => tomlValue(x, key)).join(', ')}]`;
  throw new Error(`cannot write ${key} = ${JSON.stringify(v)} as TOML`);
}

function tomlTable(header, obj) {
  const lines = [header];
  for (const [k, v] of Object.entries(obj)) {
    if (v !== undefined) lines.push(`${k} = ${tomlValue(v, k)}`);
  }
  return lines.join('\n');
}

/**
 * Starts `concierge serve --config FILE` as an OpenID provider (not demo mode) on a free loopback
 * port and a fresh database. The config file sets data_dir (a temp dir), server.bind and
 * server.public_url (so the issuer is the broker's URL), database.url, a random
 * provider.key_encryption_key, `provider` (more [provider] keys) and one [[clients]] table per
 * entry of `clients` (keys as in the config file, e.g. { id, secret_sha256, redirect_uris }).
 * Before the broker starts, `concierge users add` creates each of `users` ({ email, name,
 * password }; default: demo@example.com / PROVIDER_PASSWORD). `env` overrides as for startBroker;
 * `extraToml` is appended to the config file (e.g. [[upstreams]] tables); `port` fixes the port;
 * `publicHost` (e.g. `localhost`, for WebAuthn) replaces 127.0.0.1 in public_url and the url returned.
 * Returns startBroker's object plus { issuer, configPath, email, password }.
 */
export async function startProvider({
  clients = [],
  provider = {},
  users = [{ email: DEMO_EMAIL, name: 'Demo', password: PROVIDER_PASSWORD }],
  env = {},
  timeoutMs = 30_000,
  extraToml = '',
  port,
  publicHost,
} = {}) {
  // The binary is rebuilt from time to time; wait a little if it is being replaced.
  const bin = brokerBinary();
  for (let waited = 0; !existsSync(bin) && waited < 60_000; waited += 500) await sleep(500);
  let configPath;
  const broker = await launch({
    env,
    timeoutMs,
    port,
    async prepare({ bin: exe, tmp, db, port, url, childEnv }) {
      const dataDir = join(tmp, 'data');
      mkdirSync(dataDir);
      configPath = join(tmp, 'concierge.toml');
      const text = [
        `data_dir = ${tomlValue(dataDir)}`,
        tomlTable('[server]', { bind: `127.0.0.1:${port}`, public_url: publicHost ? `http://${publicHost}:${port}` : url }),
        tomlTable('[database]', { url: db.url }),
        tomlTable('[provider]', { key_encryption_key: randomBytes(32).toString('base64'), ...provider }),
        ...clients.map((c) => tomlTable('[[clients]]', c)),
        extraToml,
      ].join('\n\n');
      writeFileSync(configPath, `${text}\n`);
      for (const u of users) {
        const args = ['users', 'add', u.email, '--name', u.name ?? '', '--config', configPath];
        const r = spawnSync(exe, args, {
          cwd: REPO_ROOT,
          env: childEnv,
          input: `${u.password}\n`,
          encoding: 'utf8',
          timeout: 60_000,
        });
        if (r.error || r.status !== 0) {
          throw new Error(
            `concierge ${args.join(' ')} failed (${r.error?.message ?? `exit ${r.status}`})\n` +
              `${r.stdout}${r.stderr}\n--- config ---\n${text}`,
          );
        }
      }
      return ['serve', '--config', configPath];
    },
  });
  if (publicHost) broker.url = `http://${publicHost}:${broker.port}`;
  broker.issuer = broker.url; // public_url without the trailing slash
  broker.configPath = configPath;
  broker.email = users[0]?.email;
  broker.password = users[0]?.password;
  return broker;
}

/**
 * Wraps a test body so that a failure carries the broker's output in its message.
 * `getBroker` is a function because brokers are started in `before` hooks.
 */
export function withLogs(getBroker, fn) {
  return async (t) => {
    try {
      await fn(t);
    } catch (e) {
      const broker = getBroker();
      if (broker && e && typeof e === 'object') {
        try {
          e.message = `${e.message}\n${broker.logs()}`;
        } catch {
          /* read-only message */
        }
      }
      throw e;
    }
  };
}

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
];

/**
 * Launches Debian's Chromium and opens a context with the given locale (which also sets
 * Accept-Language). Returns { browser, context, newContext(opts), close() }.
 */
export async function launchBrowser({ locale = 'en-US' } = {}) {
  const executablePath = process.env.CONCIERGE_TEST_CHROMIUM || '/usr/bin/chromium';
  const browser = await chromium.launch({ executablePath, args: CHROMIUM_ARGS });
  const newContext = (opts = {}) => browser.newContext({ locale, ...opts });
  const context = await newContext();
  return {
    browser,
    context,
    newContext,
    close: () => browser.close(),
  };
}

/** The value of the session cookie in a browser context, or undefined. */
export async function sessionCookie(context) {
  return (await context.cookies()).find((c) => c.name === SESSION_COOKIE);
}

/** Path (+ query) of a page's current URL. */
export function pathOf(page) {
  const u = new URL(page.url());
  return u.pathname + u.search;
}

/**
 * Signs in through the real login page. Resolves with the POST /login response once the page
 * has settled (on /account for a success, on the re-rendered login page for a failure).
 */
export async function loginViaPage(page, baseUrl, { email = DEMO_EMAIL, password = DEMO_PASSWORD, query = '' } = {}) {
  await page.goto(`${baseUrl}/login${query}`);
  await page.fill('#email', email);
  await page.fill('#password', password);
  const responseP = page.waitForResponse(
    (r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/login',
  );
  await page.click('#login-submit');
  const response = await responseP;
  await page.waitForLoadState('load');
  return response;
}

/** Status (and Location) of GET /account with the context's cookies, without following redirects. */
export async function accountStatus(context, baseUrl) {
  const r = await context.request.get(`${baseUrl}/account`, { maxRedirects: 0 });
  return { status: r.status(), location: r.headers()['location'] || '' };
}

const ENTITIES = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };
/** Undoes handlebars' HTML escaping (&amp; &quot; &#x27; &#x3D; &#x60; ...). */
export function unescapeHtml(s) {
  return s.replace(/&(#x[0-9a-f]+|#\d+|[a-z]+);/gi, (m, e) => {
    if (e[0] === '#') {
      const n = e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10);
      return String.fromCodePoint(n);
    }
    return ENTITIES[e.toLowerCase()] ?? m;
  });
}

/**
 * GET /login with plain fetch; returns { cookie, token }: a Cookie header value carrying the CSRF
 * cookie, and the csrf_token from the form. For building requests a browser would not send.
 */
export async function csrfPair(baseUrl) {
  const r = await fetch(`${baseUrl}/login`);
  const html = await r.text();
  if (r.status !== 200) throw new Error(`GET /login answered ${r.status}`);
  const cookies = r.headers
    .getSetCookie()
    .map((c) => c.split(';')[0])
    .filter((c) => c.includes('='));
  const input = html.match(/<input[^>]*name="csrf_token"[^>]*>/i);
  if (!input) throw new Error('no csrf_token input on the login page');
  const value = input[0].match(/value="([^"]*)"/i);
  if (!value) throw new Error(`csrf_token input has no value: ${input[0]}`);
  return { cookie: cookies.join('; '), token: unescapeHtml(value[1]) };
}

/**
 * A tiny HTTP server standing in for a client's redirect URI: GET `path` answers 200 and is
 * recorded. Returns { port, url, hits, next({ timeoutMs, signal }), close() }; `next()` resolves
 * with the URL of the next request to `path`.
 */
export async function startCallbackServer(path) {
  const hits = [];
  const waiters = new Set();
  const server = createHttpServer((req, res) => {
    const u = new URL(req.url, `http://127.0.0.1:${server.address().port}`);
    if (req.method !== 'GET' || u.pathname !== path) {
      res.writeHead(404).end();
      return;
    }
    hits.push(u);
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end('<!doctype html><title>callback</title><p id="callback">received</p>');
    for (const w of waiters) w(u);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  return {
    port,
    url: `http://127.0.0.1:${port}${path}`,
    hits,
    next({ timeoutMs = 15_000, signal } = {}) {
      return new Promise((resolve, reject) => {
        const finish = () => {
          clearTimeout(timer);
          waiters.delete(done);
          signal?.removeEventListener('abort', stop);
        };
        const done = (u) => {
          finish();
          resolve(u);
        };
        const stop = () => {
          finish();
          reject(new Error(`stopped waiting for ${path} on port ${port}`));
        };
        const timer = setTimeout(() => {
          finish();
          reject(new Error(`nothing reached ${path} on port ${port} within ${timeoutMs} ms`));
        }, timeoutMs);
        waiters.add(done);
        signal?.addEventListener('abort', stop);
      });
    },
    close() {
      return closeServer(server);
    },
  };
}

// --- MFA: plugins, an independent TOTP generator, a real SMTP server --------------------------------

/** Where the built MFA plugins are (plugins/build.sh writes them); throws when totp.wasm is missing. */
export function pluginDir() {
  const dir = process.env.CONCIERGE_TEST_PLUGIN_DIR
    ? resolve(process.env.CONCIERGE_TEST_PLUGIN_DIR)
    : join(REPO_ROOT, 'plugins', 'dist');
  if (!existsSync(join(dir, 'totp.wasm'))) {
    throw new Error(`no built plugins in ${dir}: run plugins/build.sh or set CONCIERGE_TEST_PLUGIN_DIR`);
  }
  return dir;
}

/** Hex SHA-256 of a file's bytes: what a plugin manifest's `sha256` pins. */
export function sha256File(path) {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/**
 * One `[[mfa.plugins]]` table for `<pluginDir>/<id>.wasm` (or `file`), pinned to the file as it
 * is now. `more` adds manifest keys (timeout, fuel, memory); `config` the plugin's settings.
 */
export function pluginManifest(id, { file = join(pluginDir(), `${id}.wasm`), grants = [], more = {}, config } = {}) {
  const parts = [tomlTable('[[mfa.plugins]]', { id, path: file, sha256: sha256File(file), grants, ...more })];
  if (config) parts.push(tomlTable('[mfa.plugins.config]', config));
  return parts.join('\n');
}

/**
 * The `[mfa]` configuration: `settings` are its keys (required, max_attempts, ...), `smtp` an
 * optional [mfa.smtp] table, `plugins` manifest tables from pluginManifest.
 */
export function mfaToml({ settings = {}, smtp, plugins = [] } = {}) {
  const parts = [tomlTable('[mfa]', settings)];
  if (smtp) parts.push(tomlTable('[mfa.smtp]', smtp));
  return [...parts, ...plugins].join('\n\n');
}

/**
 * A TOTP code from an independent generator, Debian's oathtool (RFC 6238, SHA1, 6 digits, 30 s),
 * for the base32 `secret` at `at` (Unix seconds; default: now).
 */
export function oathtool(secret, at) {
  const args = ['--totp', '-b'];
  if (at !== undefined) args.push('--now', `@${Math.floor(at)}`);
  args.push(secret);
  const r = spawnSync('oathtool', args, { encoding: 'utf8' });
  if (r.error) throw new Error(`could not run oathtool (Debian package oathtool): ${r.error.message}`);
  if (r.status !== 0) throw new Error(`oathtool ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout.trim();
}

function testPython() {
  if (process.env.CONCIERGE_TEST_PYTHON) return process.env.CONCIERGE_TEST_PYTHON;
  const cache = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  const venv = join(cache, 'concierge', 'pyvenv', 'bin', 'python');
  return existsSync(venv) ? venv : 'python3';
}

/**
 * Starts a real SMTP server (tests/peers/smtp_sink.py, aiosmtpd) on 127.0.0.1. Returns
 * { port, message(n, { timeoutMs }), count(), stop() }; `message(n)` waits for the n-th message
 * (1-based) and resolves with it parsed by parseMail.
 */
export async function startSmtpSink({ timeoutMs = 15_000 } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'concierge-smtp-'));
  const script = join(REPO_ROOT, 'tests', 'peers', 'smtp_sink.py');
  const python = testPython();
  const child = spawn(python, [script, dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  const errors = [];
  child.stderr.on('data', (d) => errors.push(d.toString()));
  const exited = new Promise((res) => child.on('exit', (code, signal) => { live.delete(child); res({ code, signal }); }));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 3_000);
      await exited;
      clearTimeout(killer);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const firstLine = new Promise((res, rej) => {
    const rl = createInterface({ input: child.stdout });
    rl.once('line', (l) => { rl.close(); res(l.trim()); });
    child.once('error', (e) => rej(new Error(`could not start ${python}: ${e.message}`)));
    exited.then(({ code }) => rej(new Error(`${python} ${script} exited (${code}) before it listened:\n${errors.join('')}` +
      '(it needs aiosmtpd: tests/peers/requirements.txt; set CONCIERGE_TEST_PYTHON)')));
    setTimeout(() => rej(new Error(`the SMTP sink did not start within ${timeoutMs} ms`)), timeoutMs).unref();
  });
  let port;
  try {
    port = Number(await firstLine);
    if (!Number.isInteger(port) || port <= 0) throw new Error(`the SMTP sink printed ${JSON.stringify(port)}`);
  } catch (e) {
    await stop();
    throw e;
  }
  const file = (n) => join(dir, `${n}.eml`);
  return {
    port,
    count() {
      let n = 0;
      while (existsSync(file(n + 1))) n += 1;
      return n;
    },
    async message(n, { timeoutMs: wait = 15_000 } = {}) {
      const deadline = Date.now() + wait;
      while (!existsSync(file(n))) {
        if (Date.now() > deadline) throw new Error(`no message ${n} reached the SMTP sink within ${wait} ms`);
        await sleep(50);
      }
      return parseMail(readFileSync(file(n), 'latin1'));
    },
    stop,
  };
}

/** RFC 2047 encoded words (=?utf-8?b?...?= / =?utf-8?q?...?=) in a header value. */
function decodeWords(value) {
  return value
    .replace(/\?=\s+=\?/g, '?==?')
    .replace(/=\?([^?]+)\?([bqBQ])\?([^?]*)\?=/g, (_, charset, enc, text) => {
      const bytes =
        enc.toLowerCase() === 'b'
          ? Buffer.from(text, 'base64')
          : Buffer.from(
              text.replace(/_/g, ' ').replace(/=([0-9a-f]{2})/gi, (m, h) => String.fromCharCode(parseInt(h, 16))),
              'latin1',
            );
      return new TextDecoder(charset).decode(bytes);
    });
}

/**
 * A single-part message as the sink stored it: { headers (lower-case names), to, subject, text }
 * with the body's transfer encoding (base64, quoted-printable, 7bit/8bit) undone, as UTF-8.
 */
export function parseMail(raw) {
  const split = raw.indexOf('\r\n\r\n');
  const head = split < 0 ? raw : raw.slice(0, split);
  const body = split < 0 ? '' : raw.slice(split + 4);
  const headers = {};
  for (const line of head.replace(/\r\n[ \t]+/g, ' ').split('\r\n')) {
    const i = line.indexOf(':');
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  const encoding = (headers['content-transfer-encoding'] || '7bit').toLowerCase();
  let bytes;
  if (encoding === 'base64') {
    bytes = Buffer.from(body.replace(/\s+/g, ''), 'base64');
  } else if (encoding === 'quoted-printable') {
    bytes = Buffer.from(
      body.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/gi, (m, h) => String.fromCharCode(parseInt(h, 16))),
      'latin1',
    );
  } else {
    bytes = Buffer.from(body, 'latin1');
  }
  return {
    headers,
    to: headers['x-envelope-to'] || '',
    subject: decodeWords(headers.subject || ''),
    text: new TextDecoder('utf-8').decode(bytes),
    raw,
  };
}

/**
 * A fresh code-flow request of an openid-client `config` (PKCE S256, state, nonce) to
 * `redirectUri`, with more authorization parameters in `extra`. Returns the URL and the checks
 * `authorizationCodeGrant` takes: { url, pkceCodeVerifier, expectedState, expectedNonce }.
 */
export async function authorizationRequest(config, redirectUri, { scope = 'openid email profile', ...extra } = {}) {
  const pkceCodeVerifier = oidcClient.randomPKCECodeVerifier();
  const expectedState = oidcClient.randomState();
  const expectedNonce = oidcClient.randomNonce();
  const url = oidcClient.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope,
    code_challenge: await oidcClient.calculatePKCECodeChallenge(pkceCodeVerifier),
    code_challenge_method: 'S256',
    state: expectedState,
    nonce: expectedNonce,
    ...extra,
  });
  return { url, pkceCodeVerifier, expectedState, expectedNonce };
}

// --- Upstream peers ------------------------------------------------------------------------------------

/**
 * A back-channel logout endpoint (OpenID Connect Back-Channel Logout 1.0): POSTs to `path` answer
 * 200 and their bodies are recorded. { url, bodies, logoutTokens(), close() }.
 */
export async function startBackchannelReceiver(path = '/backchannel') {
  const bodies = [];
  const server = createHttpServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      if (req.method === 'POST' && req.url === path) bodies.push(body);
      res.writeHead(req.method === 'POST' && req.url === path ? 200 : 404).end();
    });
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    url: `http://127.0.0.1:${server.address().port}${path}`,
    bodies,
    /** The `logout_token` of each POST received. */
    logoutTokens: () => bodies.map((b) => new URLSearchParams(b).get('logout_token')),
    close: () => closeServer(server),
  };
}

/** A self-signed RSA key pair made with the openssl CLI: { key, cert } paths. */
export function keyPair(dir, name) {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.crt`);
  const r = spawnSync('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=${name}`,
    '-keyout', key, '-out', cert,
  ], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl failed: ${r.stderr}`);
  return { key, cert };
}

/** Closes an HTTP(S) server at once, its keep-alive connections included. */
export function closeServer(server) {
  return new Promise((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });
}

/** Signs in at npm oidc-provider's development login page (devInteractions) and consents. */
export async function oidcProviderLogin(page, login) {
  await page.locator('input[name="login"]').waitFor({ timeout: 10_000 });
  await page.fill('input[name="login"]', login);
  await page.fill('input[name="password"]', 'any');
  await page.click('button[type="submit"]');
  const consent = page.locator('button[type="submit"]', { hasText: /continue/i });
  if (await consent.count().catch(() => 0)) await consent.click();
  else {
    await page.waitForLoadState('load');
    const again = page.locator('button[type="submit"]');
    if ((await again.count()) && /interaction/.test(page.url())) await again.first().click();
  }
}

// --- Admin API ----------------------------------------------------------------------------------------

/**
 * A `[[clients]]` entry (for startProvider's `clients`) of an API client that may call the admin
 * API: client_credentials with the scope `concierge:admin`, authenticated by `secret`.
 */
export function opsClient(secret, id = 'ops') {
  return {
    id,
    channel: 'api',
    secret_sha256: sha256Hex(secret),
    grant_types: ['client_credentials'],
    scopes: ['concierge:admin'],
  };
}

/**
 * The admin API of `broker` as the client opsClient(secret, id) describes: `get(path)` resolves
 * with the JSON of a 200 answer to GET `path` (e.g. `/admin/v1/audit?kind=mfa_removed`) and
 * throws on any other status. A fresh client_credentials token per call.
 */
export function adminApi(broker, secret, id = 'ops') {
  const token = async () => {
    const r = await fetch(`${broker.url}/token`, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'concierge:admin' }),
    });
    const body = await r.text();
    if (r.status !== 200) throw new Error(`client_credentials token for ${id}: ${r.status} ${body}`);
    return JSON.parse(body).access_token;
  };
  return {
    async get(path) {
      const r = await fetch(`${broker.url}${path}`, { headers: { authorization: `Bearer ${await token()}` } });
      const body = await r.text();
      if (r.status !== 200) throw new Error(`GET ${path}: ${r.status} ${body}`);
      return JSON.parse(body);
    },
  };
}

/**
 * A page with a DevTools virtual authenticator (CTAP2, internal transport, resident keys, user
 * verification unless `uv` is false); returns { page, cdp, authenticatorId, problems } (console
 * errors and page errors: CSP violations show there). `autofill: false` is a user who does not
 * pick the passkey the browser offers in the sign-in page's email autofill (the virtual
 * authenticator would pick it at once): the page sees no conditional UI.
 */
export async function pageWithAuthenticator(context, { uv = true, autofill = true } = {}) {
  const page = await context.newPage();
  if (!autofill) {
    await page.addInitScript(() => {
      if (window.PublicKeyCredential) {
        window.PublicKeyCredential.isConditionalMediationAvailable = () => Promise.resolve(false);
      }
    });
  }
  const problems = [];
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push(m.text());
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport: 'internal',
      hasResidentKey: true,
      hasUserVerification: uv,
      isUserVerified: uv,
      automaticPresenceSimulation: true,
    },
  });
  return { page, cdp, authenticatorId, problems };
}
