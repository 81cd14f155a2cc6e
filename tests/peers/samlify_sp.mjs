#!/usr/bin/env node
// A real SAML 2.0 service provider for the browser tests of the broker as an IdP, built on npm
// `samlify` (signatures checked by samlify against the certificate of the broker's metadata
// only; every message schema-validated by `@authenio/samlify-xmllint-wasm`, both loaded from
// tests/browser/node_modules). Listens on 127.0.0.1 only.
//
//   samlify_sp.mjs --port P --key K --cert C [--enc-key K --enc-cert C] [--name-id-format F]
//                  port 0: any free port; the key pair signs its AuthnRequests, LogoutRequests
//                  and LogoutResponses (RSA-SHA256 query signatures); with an encryption key
//                  pair, the IdP's assertions are expected encrypted (EncryptedAssertion) and
//                  decrypted with it; F: the NameID format it asks for (default emailAddress)
//
// Endpoints (the same shape as tests/peers/saml_sp.py):
//   GET  /login?idp=URL   the IdP's metadata is read from URL (once), then an AuthnRequest over
//                         HTTP-Redirect: a 302 to the IdP's SSO endpoint (X-Request-Id), RelayState
//                         "rs-1"; the request ID is remembered until a Response answers it
//   POST /acs             the IdP's Response (HTTP-POST): samlify parseLoginResponse (schema,
//                         signatures against the metadata certificate, issuer, decryption), then
//                         the checks left to the application, here: InResponseTo one of the
//                         requests this SP sent and not answered before, Destination this ACS,
//                         Audience this entity ID, the bearer SubjectConfirmationData's Recipient
//                         this ACS and its NotOnOrAfter in the future; 200 with JSON {name_id,
//                         name_id_format, attributes, session_index, in_response_to, relay_state,
//                         encrypted} or 400 with JSON {error}; encrypted: how many
//                         EncryptedAssertions the Response held as posted
//   GET  /logout?name_id=N&session_index=S   a signed LogoutRequest (HTTP-Redirect) to the IdP's
//                         SingleLogoutService, RelayState "rs-lo": a 302 (X-Request-Id)
//   GET  /sls?SAMLResponse=…  the IdP's LogoutResponse: samlify parseLogoutResponse (schema, query
//                         signature required), InResponseTo one of this SP's LogoutRequests; 200
//                         with JSON {in_response_to, status, issuer, relay_state} or 400 {error}
//   GET  /sls?SAMLRequest=…   the IdP's LogoutRequest: samlify parseLogoutRequest (query signature
//                         required), the NameID one /acs got; answered with a signed LogoutResponse
//                         over HTTP-Redirect to the IdP (302), or 400 {error}; after
//                         /answer?binding=post, over HTTP-POST instead (samlify's enveloped
//                         signature): 200 with a page whose form posts itself to the IdP
//   GET  /answer?binding=redirect|post   how /sls answers the IdP's LogoutRequests (204)
//   GET  /metadata        this SP's metadata (samlify)
// It prints "ready <base>" on stdout when it listens.

import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { join, dirname } from 'node:path';

// samlify and its validator are the browser suite's npm packages (tests/browser/package.json).
const require = createRequire(join(dirname(fileURLToPath(import.meta.url)), '..', 'browser', 'package.json'));
const samlify = require('samlify');
const validator = require('@authenio/samlify-xmllint-wasm');

const { values: ARGS } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    key: { type: 'string' },
    cert: { type: 'string' },
    'enc-key': { type: 'string' },
    'enc-cert': { type: 'string' },
    'name-id-format': { type: 'string', default: 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress' },
  },
});
if (!ARGS.key || !ARGS.cert) {
  process.stderr.write('usage: samlify_sp.mjs --port P --key K --cert C [--enc-key K --enc-cert C]\n');
  process.exit(2);
}

// Every message samlify reads is validated against the SAML schemas first.
samlify.setSchemaValidator(validator);

const { binding } = samlify.Constants.namespace;
const STATE = {
  idp: null,
  outstanding: new Set(), // AuthnRequest IDs sent and not answered yet
  answered: new Set(), // AuthnRequest IDs a Response answered
  logouts: new Set(), // LogoutRequest IDs sent
  nameIds: new Set(), // NameIDs /acs accepted
  answerBinding: 'redirect', // how /sls answers the IdP's LogoutRequests
};

const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

let base;
let sp;

function makeSp() {
  const encrypted = Boolean(ARGS['enc-key']);
  return samlify.ServiceProvider({
    entityID: `${base}/metadata`,
    authnRequestsSigned: true,
    wantAssertionsSigned: true,
    wantMessageSigned: true,
    wantLogoutRequestSigned: true,
    wantLogoutResponseSigned: true,
    allowUnsolicitedResponse: false,
    privateKey: readFileSync(ARGS.key, 'utf8'),
    signingCert: readFileSync(ARGS.cert, 'utf8'),
    ...(encrypted
      ? { encPrivateKey: readFileSync(ARGS['enc-key'], 'utf8'), encryptCert: readFileSync(ARGS['enc-cert'], 'utf8') }
      : {}),
    nameIDFormat: [ARGS['name-id-format']],
    assertionConsumerService: [{ Binding: binding.post, Location: `${base}/acs` }],
    singleLogoutService: [{ Binding: binding.redirect, Location: `${base}/sls` }],
  });
}

async function idpFrom(url) {
  if (STATE.idp) return STATE.idp;
  const r = await fetch(url);
  if (r.status !== 200) throw new Error(`IdP metadata ${url}: ${r.status}`);
  let metadata = await r.text();
  // The broker requires signed AuthnRequests per SP (signing_cert_file) and publishes
  // WantAuthnRequestsSigned="false"; samlify refuses to build a request whose signing differs
  // from that flag, so this SP's copy of the metadata says what the SP's entry at the broker says.
  metadata = metadata.replace(/WantAuthnRequestsSigned="false"/, 'WantAuthnRequestsSigned="true"');
  STATE.idp = samlify.IdentityProvider({
    metadata,
    isAssertionEncrypted: Boolean(ARGS['enc-key']),
    // samlify signs the messages it sends to an IdP that says it wants them signed.
    wantLogoutRequestSigned: true,
    wantLogoutResponseSigned: true,
  });
  return STATE.idp;
}

function send(res, status, headers, body = '') {
  res.writeHead(status, { 'cache-control': 'no-store', ...headers });
  res.end(body);
}
const json = (res, status, obj) => send(res, status, { 'content-type': 'application/json' }, JSON.stringify(obj));

function readBody(req, limit = 512 * 1024) {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks = [];
    req.on('data', (c) => {
      size += c.length;
      if (size > limit) {
        reject(new Error('body too large'));
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** The raw query (as sent) without the Signature: the octet string a redirect signature covers. */
function octetString(rawQuery) {
  return rawQuery
    .split('&')
    .filter((p) => !p.startsWith('Signature='))
    .join('&');
}

const one = (v) => (Array.isArray(v) ? v : v === undefined || v === null ? [] : [v]);

/** The checks samlify leaves to the application, on what samlify verified. */
function appChecks(extract) {
  const acs = `${base}/acs`;
  const entityId = `${base}/metadata`;
  const inResponseTo = extract.response?.inResponseTo;
  if (!inResponseTo) throw new Error('InResponseTo missing: this SP takes no unsolicited Response');
  if (STATE.answered.has(inResponseTo)) throw new Error(`InResponseTo ${inResponseTo} was answered before`);
  if (!STATE.outstanding.has(inResponseTo)) {
    throw new Error(`InResponseTo ${inResponseTo} is not a request this SP sent`);
  }
  const confirmations = one(extract.subjectConfirmation);
  if (confirmations.length === 0) throw new Error('no SubjectConfirmationData');
  for (const c of confirmations) {
    if (c.inResponseTo !== inResponseTo) throw new Error('SubjectConfirmationData InResponseTo differs');
    if (c.recipient !== acs) throw new Error(`SubjectConfirmationData Recipient ${c.recipient} is not ${acs}`);
    if (!c.notOnOrAfter || !(Date.parse(c.notOnOrAfter) > Date.now())) {
      throw new Error(`SubjectConfirmationData NotOnOrAfter ${c.notOnOrAfter} is not in the future`);
    }
  }
  if (extract.response?.destination !== acs) {
    throw new Error(`Destination ${extract.response?.destination} is not ${acs}`);
  }
  const audiences = one(extract.audience);
  if (audiences.length === 0 || !audiences.every((a) => a === entityId)) {
    throw new Error(`Audience ${JSON.stringify(audiences)} is not ${entityId}`);
  }
  return inResponseTo;
}

async function acs(req, res) {
  const form = new URLSearchParams(await readBody(req));
  const body = Object.fromEntries(form);
  const idp = STATE.idp;
  if (!idp) return json(res, 400, { error: 'no IdP known yet (GET /login first)' });
  let parsed;
  try {
    parsed = await sp.parseLoginResponse(idp, 'post', { body });
  } catch (e) {
    return json(res, 400, { error: `samlify: ${e?.message ?? e}` });
  }
  let inResponseTo;
  try {
    inResponseTo = appChecks(parsed.extract);
  } catch (e) {
    return json(res, 400, { error: e.message });
  }
  STATE.outstanding.delete(inResponseTo);
  STATE.answered.add(inResponseTo);
  const { extract } = parsed;
  const format = samlify.Extractor.extract(parsed.samlContent, [
    { key: 'format', localPath: ['Response', 'Assertion', 'Subject', 'NameID'], attributes: ['Format'] },
  ]).format;
  STATE.nameIds.add(extract.nameID);
  const posted = Buffer.from(body.SAMLResponse ?? '', 'base64').toString('utf8');
  return json(res, 200, {
    name_id: extract.nameID,
    name_id_format: format ?? null,
    attributes: extract.attributes ?? {},
    session_index: extract.sessionIndex?.sessionIndex ?? null,
    in_response_to: inResponseTo,
    relay_state: body.RelayState ?? null,
    encrypted: (posted.match(/<(\w+:)?EncryptedAssertion[\s>]/g) || []).length,
  });
}

function login(res, q) {
  const { id, context } = sp.createLoginRequest(STATE.idp, 'redirect', { relayState: 'rs-1' });
  STATE.outstanding.add(id);
  send(res, 302, { location: context, 'x-request-id': id });
}

function logout(res, q) {
  const { id, context } = sp.createLogoutRequest(
    STATE.idp,
    'redirect',
    { logoutNameID: q.get('name_id'), sessionIndex: q.get('session_index') ?? undefined },
    { relayState: 'rs-lo' },
  );
  STATE.logouts.add(id);
  send(res, 302, { location: context, 'x-request-id': id });
}

async function sls(res, url, rawQuery) {
  const query = Object.fromEntries(url.searchParams);
  const request = { query, octetString: octetString(rawQuery) };
  if (query.SAMLRequest !== undefined) {
    // The IdP's own LogoutRequest (its sign-out): verified, then answered.
    let parsed;
    try {
      parsed = await sp.parseLogoutRequest(STATE.idp, 'redirect', request);
    } catch (e) {
      return json(res, 400, { error: `samlify: ${e?.message ?? e}` });
    }
    const { extract } = parsed;
    if (!STATE.nameIds.has(extract.nameID)) {
      return json(res, 400, { error: `LogoutRequest for ${extract.nameID}, not a NameID this SP got` });
    }
    STATE.idpLogouts = (STATE.idpLogouts ?? 0) + 1;
    if (STATE.answerBinding === 'post') {
      const out = sp.createLogoutResponse(STATE.idp, parsed, 'post', query.RelayState ?? '');
      const page = `<!doctype html><html><body><form method="post" action="${escapeHtml(out.entityEndpoint)}">`
        + `<input type="hidden" name="SAMLResponse" value="${escapeHtml(out.context)}">`
        + `<input type="hidden" name="RelayState" value="${escapeHtml(query.RelayState ?? '')}">`
        + '<noscript><button>Continue</button></noscript></form>'
        + '<script>document.forms[0].submit()</script></body></html>';
      return send(res, 200, { 'content-type': 'text/html; charset=utf-8' }, page);
    }
    const { context } = sp.createLogoutResponse(STATE.idp, parsed, 'redirect', { relayState: query.RelayState ?? '' });
    return send(res, 302, { location: context });
  }
  if (query.SAMLResponse === undefined) return json(res, 400, { error: 'neither SAMLRequest nor SAMLResponse' });
  let parsed;
  try {
    parsed = await sp.parseLogoutResponse(STATE.idp, 'redirect', request);
  } catch (e) {
    return json(res, 400, { error: `samlify: ${e?.message ?? e}` });
  }
  const { extract } = parsed;
  const inResponseTo = extract.response?.inResponseTo;
  if (!STATE.logouts.has(inResponseTo)) {
    return json(res, 400, { error: `InResponseTo ${inResponseTo} is not a LogoutRequest this SP sent` });
  }
  STATE.logouts.delete(inResponseTo);
  const status = samlify.Extractor.extract(parsed.samlContent, [
    { key: 'top', localPath: ['LogoutResponse', 'Status', 'StatusCode'], attributes: ['Value'] },
    { key: 'second', localPath: ['LogoutResponse', 'Status', 'StatusCode', 'StatusCode'], attributes: ['Value'] },
  ]);
  return json(res, 200, {
    in_response_to: inResponseTo,
    issuer: extract.issuer,
    status: status.top ?? null,
    sub_status: status.second ?? null,
    relay_state: parsed.relayState ?? query.RelayState ?? null,
    signature_ok: Boolean(parsed.sigAlg),
  });
}

const server = createServer(async (req, res) => {
  const url = new URL(req.url, base);
  const rawQuery = req.url.includes('?') ? req.url.slice(req.url.indexOf('?') + 1) : '';
  try {
    if (req.method === 'GET' && url.pathname === '/metadata') {
      return send(res, 200, { 'content-type': 'application/samlmetadata+xml' }, sp.getMetadata());
    }
    if (req.method === 'GET' && url.pathname === '/login') {
      await idpFrom(url.searchParams.get('idp'));
      return login(res, url.searchParams);
    }
    if (req.method === 'POST' && url.pathname === '/acs') return await acs(req, res);
    if (req.method === 'GET' && url.pathname === '/logout') {
      if (!STATE.idp) return json(res, 400, { error: 'no IdP known yet (GET /login first)' });
      return logout(res, url.searchParams);
    }
    if (req.method === 'GET' && url.pathname === '/answer') {
      const b = url.searchParams.get('binding');
      if (b !== 'redirect' && b !== 'post') return json(res, 400, { error: 'binding=redirect|post' });
      STATE.answerBinding = b;
      return send(res, 204, {});
    }
    if (req.method === 'GET' && url.pathname === '/sls') {
      if (!STATE.idp) return json(res, 400, { error: 'no IdP known yet (GET /login first)' });
      return await sls(res, url, rawQuery);
    }
    return send(res, 404, { 'content-type': 'text/plain' }, 'not found');
  } catch (e) {
    // A test peer: say what went wrong.
    return send(res, 500, { 'content-type': 'text/plain' }, `SP error: ${e?.stack ?? e}`);
  }
});

server.listen(Number(ARGS.port), '127.0.0.1', () => {
  base = `http://127.0.0.1:${server.address().port}`;
  sp = makeSp();
  process.stdout.write(`ready ${base}\n`);
});
