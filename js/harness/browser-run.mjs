// Serve the package and an exported model on 127.0.0.1, open the harness page in headless Chromium (the
// system's; nothing is downloaded), and print what the page measured as one JSON object.
//   node harness/browser-run.mjs --model DIR --texts texts.json [--expected vectors.f32] [--repeat 3]
//        [--chromium /usr/bin/chromium] [--timeout 120]
import { spawn } from 'node:child_process';
import { createReadStream, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { compare, median, parseArgs, readFloat32 } from './common.mjs';

const args = parseArgs(process.argv.slice(2), {
  model: undefined, texts: undefined, expected: '', repeat: '3', chromium: '/usr/bin/chromium', timeout: '120',
  out: '',
});
const pkg = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const types = {
  '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.json': 'application/json',
  '.wasm': 'application/wasm', '.onnx': 'application/octet-stream', '.f32': 'application/octet-stream',
};

function fileFor(url) {
  if (url === '/texts.json') return path.resolve(args.texts);
  if (url.startsWith('/model/')) return path.join(path.resolve(args.model), url.slice('/model/'.length));
  if (url.startsWith('/pkg/')) return path.join(pkg, url.slice('/pkg/'.length));
  return null;
}

let resolveDone;
const done = new Promise((resolve) => { resolveDone = resolve; });
let vectors = null;
const server = createServer((req, res) => {
  const url = decodeURIComponent(new URL(req.url, 'http://127.0.0.1').pathname);
  if (req.method === 'POST') {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      res.end('ok');
      if (url === '/vectors') vectors = new Float32Array(body.buffer.slice(body.byteOffset, body.byteOffset + body.length));
      if (url === '/result') resolveDone(JSON.parse(body.toString('utf8')));
    });
    return;
  }
  const file = fileFor(url);
  const root = url.startsWith('/pkg/') ? pkg : null;
  if (!file || url.includes('..') || (root && !file.startsWith(root))) {
    res.writeHead(404).end();
    return;
  }
  try {
    statSync(file);
  } catch {
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200, { 'content-type': types[path.extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' });
  createReadStream(file).pipe(res);
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const port = server.address().port;

const profile = mkdtempSync(path.join(tmpdir(), 'embedopt-chromium-'));
const flags = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage', `--user-data-dir=${profile}`,
];
const browser = spawn(args.chromium, [...flags, `http://127.0.0.1:${port}/pkg/harness/index.html?repeat=${args.repeat}`], {
  stdio: ['ignore', 'ignore', 'pipe'], detached: true,
});
let stderr = '';
browser.stderr.on('data', (d) => { stderr = (stderr + d).slice(-4000); });
const exited = new Promise((resolve) => browser.on('exit', (code) => resolve(code)));
let timeout;
const timer = new Promise((resolve) => {
  timeout = setTimeout(() => resolve({ error: `no result within ${args.timeout}s` }), Number(args.timeout) * 1000);
});
const result = await Promise.race([done, timer, exited.then((code) => ({ error: `chromium exited (${code}) before posting: ${stderr}` }))]);
try { process.kill(-browser.pid, 'SIGTERM'); } catch { /* already gone */ }
clearTimeout(timeout);
let grace;
await Promise.race([exited, new Promise((r) => { grace = setTimeout(r, 5000); })]);
clearTimeout(grace);
server.closeAllConnections();
server.close();
rmSync(profile, { recursive: true, force: true });

if (result.error) {
  console.log(JSON.stringify({ runtime: 'chromium', error: result.error }));
  process.exit(1);
}
const ortVersion = JSON.parse(readFileSync(path.join(pkg, 'node_modules/onnxruntime-web/package.json'), 'utf8')).version;
const report = {
  runtime: 'chromium',
  browser: result.user_agent,
  onnxruntime: `onnxruntime-web ${ortVersion} (wasm)`,
  texts: result.texts,
  dim: result.dim,
  load_seconds: result.load_seconds,
  seconds: result.seconds,
  texts_per_s: result.texts / median(result.seconds),
  tokenize_share: result.tokenize_seconds / median(result.seconds),
  cross_origin_isolated: result.cross_origin_isolated,
};
if (args.expected) Object.assign(report, compare(vectors, readFloat32(args.expected)));
if (args.out) writeFileSync(args.out, Buffer.from(vectors.buffer));
console.log(JSON.stringify(report));
