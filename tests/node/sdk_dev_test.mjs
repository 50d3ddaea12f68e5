#!/usr/bin/env node
// The official Alibaba Cloud credentials SDK for Node.js (@alicloud/credentials) against
// `idaas-projector dev`.
//
// Starts `idaas-projector dev` on free ports with short-lived tokens, then runs the SDK in child
// node processes (sdk_client.mjs) with the environment the webhook injects plus
// NODE_EXTRA_CA_CERTS=<dir>/ca.pem, the STS endpoint being dev's `sts_https_endpoint` (the SDK
// speaks only HTTPS to STS):
// 1. the SDK obtains credentials from the STS emulator (which logs that it issued them for the
//    process's session name);
// 2. after the projector has refreshed the token file, a new process obtains them again;
// 3. a role of another account gets the emulator's AuthenticationFail.NoPermission;
// 4. an OIDC provider that is not registered gets "No such OIDC Provider registered.";
// 5. without NODE_EXTRA_CA_CERTS the TLS handshake fails;
// 6. Ctrl-C (SIGINT) stops dev with exit status 0.
//
// Usage: node tests/node/sdk_dev_test.mjs PATH_TO_idaas-projector
// Prints one line per check and `N passed, M failed`; never a secret or a token. Gives up after
// DEADLINE_MS, and stops dev whatever happens.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const DEADLINE_MS = 180_000;
const CLIENT_TIMEOUT_MS = 30_000;
const results = [];
let dev = null;
let devError = null;

function check(name, ok, detail = '') {
  results.push(Boolean(ok));
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail ? ': ' + detail : ''}`);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(what, predicate, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = predicate();
    if (value) return value;
    if (devError) throw devError;
    if (dev && dev.exitCode !== null) throw new Error(`dev exited with ${dev.exitCode} while waiting for ${what}`);
    await sleep(200);
  }
  throw new Error(`timed out waiting for ${what}`);
}

function read(file) {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

function startDev(binary, work, ports) {
  const log = fs.openSync(path.join(work, 'dev.log'), 'w');
  const addr = (port) => `127.0.0.1:${port}`;
  const args = ['dev', '--dir', work, '--token-lifetime', '15s',
    '--listen', addr(ports.webhook), '--admin-listen', addr(ports.admin),
    '--idaas-listen', addr(ports.idaas), '--sts-listen', addr(ports.sts),
    '--sts-https-listen', addr(ports.stsHttps)];
  const child = spawn(binary, args, { cwd: REPO, stdio: ['ignore', log, log] });
  child.on('error', (e) => { devError = e; });
  fs.closeSync(log);
  return child;
}

// The environment of an application container after the webhook: what it injects, the CA to
// trust, and nothing else of Alibaba Cloud's from the machine running the test (no credentials,
// no debug output that would print request bodies). An override of undefined removes a variable.
function podEnv(info, session, overrides = {}) {
  const dropped = /^(ALIBABA_CLOUD_|ALICLOUD_)|^(DEBUG|NODE_DEBUG|NODE_OPTIONS|NODE_EXTRA_CA_CERTS)$/;
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !dropped.test(k)));
  Object.assign(env, {
    ALIBABA_CLOUD_ROLE_ARN: info.role_arn,
    ALIBABA_CLOUD_OIDC_PROVIDER_ARN: info.oidc_provider_arn,
    ALIBABA_CLOUD_OIDC_TOKEN_FILE: info.token_file,
    ALIBABA_CLOUD_ROLE_SESSION_NAME: session,
    NODE_EXTRA_CA_CERTS: info.ca_file,
  }, overrides);
  return Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined));
}

// Runs sdk_client.mjs with `env`; its one JSON line, or a failure saying why there is none.
function runClient(info, env) {
  const stsHost = new URL(info.sts_https_endpoint).host;
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(HERE, 'sdk_client.mjs'), stsHost],
      { cwd: HERE, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), CLIENT_TIMEOUT_MS);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(out.trim().split('\n').pop()));
      } catch {
        resolve({ ok: false, error: `client exited (${signal || code}) without an answer: ${err.slice(0, 300)}` });
      }
    });
  });
}

// The STS emulator's log line for credentials it issued to `session`.
function issuedFor(work, session) {
  return read(path.join(work, 'dev.log')).split('\n')
    .some((l) => l.includes('STS emulator issued credentials') && l.includes(`session=${session}`));
}

// The emulator's credentials: STS.NT + 22 characters, a 44-character secret, CAIS + 320.
function fromEmulator(r) {
  return r.ok && r.keyIdPrefix === 'STS.' && r.keyIdLength === 28 && r.secretLength === 44
    && r.securityTokenLength === 324 && r.type === 'oidc_role_arn';
}

// One line about an answer: the SDK's credentials without secrets, or STS's error code and
// message (the SDK quotes STS's JSON answer), or the error as the SDK gave it.
function summary(r) {
  if (r.ok) {
    return `${r.keyIdPrefix}*** (${r.providerName}; secret ${r.secretLength} chars, security token ${r.securityTokenLength} chars)`;
  }
  const sts = /"Code":"([^"]*)".*"Message":"([^"]*)"/.exec(r.error);
  return sts ? `${sts[1]}: ${sts[2]}` : r.error.replace(/\s*(GET|POST) \S+ failed\.$/, '');
}

async function obtain(info, work, name, session) {
  const r = await runClient(info, podEnv(info, session));
  check(name, fromEmulator(r), summary(r));
  const logged = await waitFor(`the emulator's log for ${session}`, () => issuedFor(work, session), 5_000)
    .catch(() => false);
  check(`the STS emulator issued them (session ${session})`, logged);
}

async function refused(info, work, name, overrides, expected) {
  const session = `node-sdk-refused-${results.length}`;
  const r = await runClient(info, podEnv(info, session, overrides));
  check(name, !r.ok && expected.test(r.error) && !issuedFor(work, session), summary(r));
}

async function checks(work, ports) {
  const info = JSON.parse(await waitFor('dev.json', () => read(path.join(work, 'dev.json'))));
  check('dev.json names the HTTPS STS endpoint',
    info.sts_https_endpoint === `https://localhost:${ports.stsHttps}`, info.sts_https_endpoint);
  const first = await waitFor('the token file', () => read(info.token_file));
  check('dev writes the token file', first.split('.').length === 3);

  await obtain(info, work, 'the SDK obtains credentials over HTTPS with the injected env and ca.pem', 'node-sdk-1');
  await waitFor('a refreshed token', () => { const t = read(info.token_file); return t !== first && t; }, 40_000);
  await obtain(info, work, 'a new process obtains credentials again after the refresh', 'node-sdk-2');

  await refused(info, work, 'a role of another account is refused',
    { ALIBABA_CLOUD_ROLE_ARN: 'acs:ram::9999999999999999:role/idaas-projector-dev' },
    /AuthenticationFail\.NoPermission/);
  await refused(info, work, 'an OIDC provider that is not registered is refused',
    { ALIBABA_CLOUD_OIDC_PROVIDER_ARN: 'acs:ram::1234567890123456:oidc-provider/not-registered' },
    /No such OIDC Provider registered\./);
  await refused(info, work, 'without NODE_EXTRA_CA_CERTS the certificate is not trusted',
    { NODE_EXTRA_CA_CERTS: undefined }, /certificate/i);
}

// SIGINT, then the exit status (SIGKILL after 20 s).
async function stopDev() {
  if (devError || !dev || dev.exitCode !== null || dev.signalCode !== null) return dev && dev.exitCode;
  const exited = new Promise((resolve) => dev.once('exit', (code) => resolve(code)));
  dev.kill('SIGINT');
  const timer = setTimeout(() => dev.kill('SIGKILL'), 20_000);
  const code = await exited;
  clearTimeout(timer);
  return code;
}

async function main() {
  const binary = path.resolve(process.argv[2] || path.join(REPO, 'target/debug/idaas-projector'));
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'idaas-projector-dev-node-'));
  const ports = {};
  for (const k of ['webhook', 'admin', 'idaas', 'sts', 'stsHttps']) ports[k] = await freePort();
  dev = startDev(binary, work, ports);
  try {
    await checks(work, ports);
  } catch (e) {
    check('dev end to end', false, `${e.name}: ${e.message}`);
  } finally {
    const code = await stopDev();
    check('Ctrl-C stops dev cleanly', code === 0, `exit status ${code}`);
    if (results.every(Boolean)) fs.rmSync(work, { recursive: true, force: true });
    else console.log(`dev's log (${work}/dev.log):\n${read(path.join(work, 'dev.log'))}`);
  }
  const passed = results.filter(Boolean).length;
  console.log(`${passed} passed, ${results.length - passed} failed`);
  return results.every(Boolean) ? 0 : 1;
}

// Bounded: past the deadline, or when this test is interrupted, dev is killed and the test fails.
const killDev = () => {
  if (dev && !devError && dev.exitCode === null && dev.signalCode === null) dev.kill('SIGKILL');
};
process.on('exit', killDev);
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => { killDev(); process.exit(130); });
setTimeout(() => {
  console.log(`FAIL the test did not finish within ${DEADLINE_MS / 1000} s`);
  killDev();
  process.exit(1);
}, DEADLINE_MS).unref();

process.exitCode = await main();
