// Embed a text file with the Node loader, time it, and compare with Python's vectors; prints one JSON object.
//   node harness/node-run.mjs --model DIR --texts texts.json [--expected vectors.f32] [--repeat 3] [--threads N]
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { StaticModel } from '../src/node.js';
import { compare, median, parseArgs, readFloat32 } from './common.mjs';

const args = parseArgs(process.argv.slice(2), {
  model: undefined, texts: undefined, expected: '', repeat: '3', threads: '', out: '',
});
const texts = JSON.parse(readFileSync(args.texts, 'utf8'));
let started = performance.now();
const model = await StaticModel.load(args.model, args.threads ? { threads: Number(args.threads) } : {});
const loadSeconds = (performance.now() - started) / 1000;
const flat = (rows) => {
  const out = new Float32Array(rows.length * model.dim);
  rows.forEach((r, i) => out.set(r, i * model.dim));
  return out;
};
const vectors = flat(await model.encode(texts)); // also the warm-up
const seconds = [];
for (let r = 0; r < Number(args.repeat); r++) {
  started = performance.now();
  await model.encode(texts);
  seconds.push((performance.now() - started) / 1000);
}
started = performance.now();
for (const t of texts) model.tokenize(t);
const tokenizeSeconds = (performance.now() - started) / 1000;
const require = createRequire(import.meta.url);
const report = {
  runtime: 'node',
  node: process.version,
  onnxruntime: `onnxruntime-node ${require('onnxruntime-node/package.json').version}`,
  texts: texts.length,
  dim: model.dim,
  load_seconds: loadSeconds,
  seconds,
  texts_per_s: texts.length / median(seconds),
  tokenize_share: tokenizeSeconds / median(seconds),
};
if (args.expected) Object.assign(report, compare(vectors, readFloat32(args.expected)));
if (args.out) writeFileSync(args.out, Buffer.from(vectors.buffer));
await model.release();
console.log(JSON.stringify(report));
