// Starts the privacyIDEA peer (start.sh, see README.md) from node tests; node built-ins only.
//
//   import { startPrivacyIdea } from '../peers/privacyidea/privacyidea.mjs';
//   const pi = await startPrivacyIdea();          // { base_url, credential, user, seed_base32, ... }
//   ...
//   await pi.stop();                              // SIGTERM; SIGKILL after 5 s; removes pi.dir
//
// The first start on a machine installs privacyIDEA into its cached venv (about 20 s); run
// tests/peers/privacyidea/install.sh beforehand to keep that out of a test's time.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const START = join(dirname(fileURLToPath(import.meta.url)), 'start.sh');

/**
 * Starts a provisioned privacyIDEA on 127.0.0.1. `args` go to pi_server.py (e.g. ['--seed', hex],
 * ['--no-api-key']). Resolves with the JSON the peer printed plus `stop()`.
 */
export async function startPrivacyIdea({ args = [], timeoutMs = 120_000 } = {}) {
  // Our own directory, so that it goes away even if the peer never got to remove it.
  const parent = mkdtempSync(join(tmpdir(), 'concierge-pi-'));
  const child = spawn(START, ['--dir', join(parent, 'pi'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const errors = [];
  child.stderr.on('data', (d) => errors.push(d.toString()));
  const exited = new Promise((res) => child.on('exit', (code, signal) => res({ code, signal })));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(killer);
    }
    rmSync(parent, { recursive: true, force: true });
  };
  let timer;
  const ready = new Promise((res, rej) => {
    const rl = createInterface({ input: child.stdout });
    rl.once('line', (l) => { rl.close(); res(l); });
    child.once('error', (e) => rej(new Error(`could not run ${START}: ${e.message}`)));
    exited.then(({ code, signal }) =>
      rej(new Error(`the privacyIDEA peer exited (${code ?? signal}) before it was ready:\n${errors.join('')}`)));
    timer = setTimeout(() => rej(new Error(`the privacyIDEA peer was not ready within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    const peer = JSON.parse(await ready);
    return { ...peer, stop };
  } catch (e) {
    await stop();
    throw e;
  } finally {
    clearTimeout(timer);
  }
}
