// Exact BERT normalization and pre-tokenization from the per-code-point tables that `embedopt export static`
// measures with the Python `tokenizers` library (tokenizer-tables.json).
//
// Why: the JavaScript BertNormalizer in @huggingface/tokenizers tests CJK ranges per UTF-16 unit (astral
// ideographs are not split off), lowercases with context (a final capital sigma becomes "ς", Rust gives "σ"),
// and uses the JavaScript engine's Unicode tables where Rust uses its own (a newer emoji is dropped by Rust and
// kept by JavaScript, which turns a word next to it into [UNK]). Both Rust steps act on one code point at a time,
// so a table of their effect per code point reproduces them exactly, whatever Unicode version the engine has.

const KEEP = 0;
const REMOVE = 1;
const SPACE = 2;
const ISOLATE = 3;
const MAP = 4;
const HANGUL = 5;

const WORD = 0;
const WHITESPACE = 1;
const PUNCTUATION = 2;

/** Sorted, disjoint [lo, hi] ranges -> a membership test (binary search; used above the BMP). */
function rangeTest(ranges) {
  return (cp) => {
    let lo = 0;
    let hi = ranges.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (cp < ranges[mid][0]) hi = mid - 1;
      else if (cp > ranges[mid][1]) lo = mid + 1;
      else return true;
    }
    return false;
  };
}

function fillBmp(table, ranges, value) {
  for (const [lo, hi] of ranges) {
    for (let cp = lo; cp <= Math.min(hi, 0xffff); cp++) table[cp] = value;
  }
}

function hangulNfd(cp) {
  const s = cp - 0xac00;
  const l = String.fromCharCode(0x1100 + Math.floor(s / 588));
  const v = String.fromCharCode(0x1161 + Math.floor((s % 588) / 28));
  return s % 28 ? l + v + String.fromCharCode(0x11a7 + (s % 28)) : l + v;
}

/**
 * The normalizer of the tables: a function from text to normalized text.
 * @param {{remove: number[][], space: number[][], isolate: number[][], hangul: boolean, map: Object<string, string>}} t
 */
export function makeNormalizer(t) {
  const bmp = new Uint8Array(0x10000);
  fillBmp(bmp, t.remove, REMOVE);
  fillBmp(bmp, t.space, SPACE);
  fillBmp(bmp, t.isolate, ISOLATE);
  const map = new Map();
  for (const [key, value] of Object.entries(t.map)) {
    const cp = Number(key);
    map.set(cp, value);
    if (cp <= 0xffff) bmp[cp] = MAP;
  }
  if (t.hangul) {
    for (let cp = 0xac00; cp <= 0xd7a3; cp++) if (bmp[cp] === KEEP) bmp[cp] = HANGUL;
  }
  const isRemoved = rangeTest(t.remove);
  const isSpace = rangeTest(t.space);
  const isIsolated = rangeTest(t.isolate);
  const classify = (cp) => {
    if (cp <= 0xffff) return bmp[cp];
    if (map.has(cp)) return MAP;
    if (isRemoved(cp)) return REMOVE;
    if (isSpace(cp)) return SPACE;
    if (isIsolated(cp)) return ISOLATE;
    return KEEP;
  };
  return (text) => {
    let out = '';
    let run = 0; // start of the current run of unchanged UTF-16 units, copied in one slice
    let i = 0;
    while (i < text.length) {
      const cp = text.codePointAt(i);
      const width = cp > 0xffff ? 2 : 1;
      const kind = classify(cp);
      if (kind !== KEEP) {
        out += text.slice(run, i);
        if (kind === SPACE) out += ' ';
        else if (kind === ISOLATE) out += ' ' + String.fromCodePoint(cp) + ' ';
        else if (kind === MAP) out += map.get(cp);
        else if (kind === HANGUL) out += hangulNfd(cp);
        run = i + width;
      }
      i += width;
    }
    return run === 0 ? text : out + text.slice(run);
  };
}

/**
 * The pre-tokenizer of the tables: split on whitespace (dropped) and around punctuation (kept, alone).
 * @param {{whitespace: number[][], punctuation: number[][]}} t
 */
export function makePreTokenizer(t) {
  const bmp = new Uint8Array(0x10000);
  fillBmp(bmp, t.whitespace, WHITESPACE);
  fillBmp(bmp, t.punctuation, PUNCTUATION);
  const isWhitespace = rangeTest(t.whitespace);
  const isPunctuation = rangeTest(t.punctuation);
  const classify = (cp) => {
    if (cp <= 0xffff) return bmp[cp];
    if (isWhitespace(cp)) return WHITESPACE;
    if (isPunctuation(cp)) return PUNCTUATION;
    return WORD;
  };
  return (text) => {
    const words = [];
    let start = -1;
    let i = 0;
    while (i < text.length) {
      const cp = text.codePointAt(i);
      const width = cp > 0xffff ? 2 : 1;
      const kind = classify(cp);
      if (kind === WORD) {
        if (start < 0) start = i;
      } else {
        if (start >= 0) words.push(text.slice(start, i));
        start = -1;
        if (kind === PUNCTUATION) words.push(text.slice(i, i + width));
      }
      i += width;
    }
    if (start >= 0) words.push(text.slice(start));
    return words;
  };
}
