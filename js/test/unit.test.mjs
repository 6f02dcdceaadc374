// node --test test/
// The parity test needs a fixture made by Python (tests/test_js_static.py makes one and sets
// EMBEDOPT_STATIC_FIXTURE): a folder with model/ (an export), texts.json and expected.f32 (StaticProvider's vectors).
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { StaticModel, firstCodePoints, planBatches } from '../src/node.js';
import { makeNormalizer, makePreTokenizer } from '../src/tables.js';

test('firstCodePoints cuts by code point like Python, never inside a surrogate pair', () => {
  assert.equal(firstCodePoints('abc', 5), 'abc');
  assert.equal(firstCodePoints('abcdef', 3), 'abc');
  assert.equal(firstCodePoints('😀😀😀', 2), '😀😀'); // 6 UTF-16 units, 3 code points
  assert.equal(firstCodePoints('a😀b', 2), 'a😀');
  assert.equal(firstCodePoints('', 0), '');
});

test('planBatches covers every text once, shortest first, within the padded budget', () => {
  const lengths = [5, 0, 300, 7, 7, 1, 2000, 3];
  const batches = planBatches(lengths, 600);
  assert.deepEqual(batches.flat().sort((a, b) => a - b), [...lengths.keys()]);
  let previous = -1;
  for (const batch of batches) {
    const width = Math.max(1, ...batch.map((i) => lengths[i]));
    assert.ok(batch.length === 1 || batch.length * width <= 600, `batch ${batch} over budget`);
    for (const i of batch) {
      assert.ok(lengths[i] >= previous);
      previous = lengths[i];
    }
  }
});

test('table normalizer: removal, whitespace, CJK isolation above the BMP, mappings, Hangul', () => {
  const normalize = makeNormalizer({
    remove: [[0, 8], [0x1f978, 0x1f978]],
    space: [[9, 10]],
    isolate: [[0x4e00, 0x9fff], [0x20000, 0x2a6df]],
    hangul: true,
    map: { 65: 'a', 931: 'σ', 233: 'e' },
  });
  assert.equal(normalize('A\u0000B'), 'aB');
  assert.equal(normalize('x\ty'), 'x y');
  assert.equal(normalize('a𠀀b'), 'a 𠀀 b'); // astral ideograph: the JS BertNormalizer misses it
  assert.equal(normalize('ΟΔΟΣ'), 'ΟΔΟσ'); // per code point: no final-sigma context
  assert.equal(normalize('hi🥸'), 'hi'); // dropped as the tables say, whatever this engine's Unicode says
  assert.equal(normalize('한'), '\u1112\u1161\u11ab');
  assert.equal(normalize('café'), 'cafe');
  const unchanged = 'plain text';
  assert.equal(normalize(unchanged), unchanged);
});

test('table pre-tokenizer: whitespace dropped, punctuation alone, astral code points kept whole', () => {
  const split = makePreTokenizer({ whitespace: [[32, 32]], punctuation: [[33, 33], [44, 44], [0x1f10d, 0x1f10d]] });
  assert.deepEqual(split('hello, world!'), ['hello', ',', 'world', '!']);
  assert.deepEqual(split('  a😀b  '), ['a😀b']);
  assert.deepEqual(split('x\u{1f10d}y'), ['x', '\u{1f10d}', 'y']);
  assert.deepEqual(split(''), []);
});

const fixture = process.env.EMBEDOPT_STATIC_FIXTURE;
test('vectors equal Python StaticProvider on the fixture', { skip: fixture ? false : 'EMBEDOPT_STATIC_FIXTURE is not set (tests/test_js_static.py sets it)' }, async () => {
  assert.ok(existsSync(path.join(fixture, 'model', 'model.onnx')), `no export in ${fixture}/model`);
  const texts = JSON.parse(readFileSync(path.join(fixture, 'texts.json'), 'utf8'));
  const bytes = readFileSync(path.join(fixture, 'expected.f32'));
  const expected = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  const model = await StaticModel.load(path.join(fixture, 'model'), { batchTokens: 4096 });
  const rows = await model.encode(texts);
  assert.equal(rows.length, texts.length);
  let worst = 0;
  rows.forEach((row, i) => {
    assert.equal(row.length, model.dim);
    for (let j = 0; j < model.dim; j++) worst = Math.max(worst, Math.abs(row[j] - expected[i * model.dim + j]));
  });
  assert.ok(worst <= 1e-5, `max abs diff ${worst}`);
  await assert.rejects(() => model.encode('not an array'), TypeError);
  await model.release();
});
