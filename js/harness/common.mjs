// Shared by the Node and browser runners: arguments and the comparison with Python's vectors.
import { readFileSync } from 'node:fs';

export function parseArgs(argv, defaults) {
  const args = { ...defaults };
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i];
    if (!key.startsWith('--')) throw new Error(`unexpected argument ${key}`);
    const name = key.slice(2);
    if (!(name in defaults)) throw new Error(`unknown option ${key}; known: ${Object.keys(defaults).map((k) => `--${k}`).join(' ')}`);
    args[name] = argv[++i];
  }
  for (const [k, v] of Object.entries(args)) if (v === undefined) throw new Error(`--${k} is required`);
  return args;
}

export function readFloat32(path) {
  const bytes = readFileSync(path);
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
}

/** Largest |a - b| and how many values differ at all. */
export function compare(got, expected) {
  if (got.length !== expected.length) throw new Error(`got ${got.length} values, expected ${expected.length}`);
  let maxAbs = 0;
  let differing = 0;
  for (let i = 0; i < got.length; i++) {
    const d = Math.abs(got[i] - expected[i]);
    if (d > maxAbs || Number.isNaN(d)) maxAbs = Number.isNaN(d) ? Infinity : d;
    if (got[i] !== expected[i]) differing++;
  }
  return { max_abs_diff: maxAbs, differing_values: differing };
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
