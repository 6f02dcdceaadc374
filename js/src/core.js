// The runtime-independent part of the loader: tokenization rules, batching and the graph call.
// `node.js` and `web.js` add how files are read and which onnxruntime runs the graph.

import { Tokenizer } from '@huggingface/tokenizers';
import { makeNormalizer, makePreTokenizer } from './tables.js';

export const FORMAT = 'embedopt-static-onnx';
export const FORMAT_VERSION = 1;

const decoder = new TextDecoder();

/** The first `n` code points of `text` (Python's `text[:n]`; a UTF-16 slice could split a surrogate pair). */
export function firstCodePoints(text, n) {
  if (text.length <= n) return text; // never more code points than UTF-16 units
  let count = 0;
  let i = 0;
  while (i < text.length && count < n) {
    i += text.codePointAt(i) > 0xffff ? 2 : 1;
    count++;
  }
  return text.slice(0, i);
}

/**
 * Batches of indices into `lengths`, shortest first, each padded to its longest member and holding at most
 * `budget` ids after padding (a single text longer than the budget gets a batch of its own).
 */
export function planBatches(lengths, budget) {
  const order = Array.from(lengths.keys()).sort((a, b) => lengths[a] - lengths[b]);
  const batches = [];
  let start = 0;
  while (start < order.length) {
    let end = start + 1;
    while (end < order.length && (end + 1 - start) * Math.max(1, lengths[order[end]]) <= budget) end++;
    batches.push(order.slice(start, end));
    start = end;
  }
  return batches;
}

const WORD_CACHE_SIZE = 1 << 17;

/** WordPiece splits each word on its own: remember the pieces of words already seen (text repeats words). */
function cacheWords(model) {
  if (typeof model?.encode !== 'function') return;
  const encodeWords = model.encode.bind(model);
  let cache = new Map();
  model.encode = (words) => {
    const out = [];
    for (const word of words) {
      let pieces = cache.get(word);
      if (pieces === undefined) {
        pieces = encodeWords([word]);
        if (cache.size >= WORD_CACHE_SIZE) cache = new Map();
        cache.set(word, pieces);
      }
      for (const piece of pieces) out.push(piece);
    }
    return out;
  };
}

export class StaticModel {
  /** Use `StaticModel.load(dir)` from `embedopt-static` (Node) or `StaticModel.load(url)` from `embedopt-static/web`. */
  constructor({ ort, session, tokenizer, config, batchTokens = 2048 }) {
    this.ort = ort;
    this.session = session;
    this.tokenizer = tokenizer;
    this.config = config;
    this.dim = config.dim;
    this.maxLength = config.max_length;
    this.maxChars = config.max_chars;
    this.batchTokens = batchTokens;
  }

  /**
   * @param {object} platform `{ ort, read(name) -> Promise<Uint8Array>, modelSource(read) -> Promise<string|Uint8Array>,
   *   sessionOptions }`
   * @param {object} [options] `{ batchTokens }`
   */
  static async _open(platform, options = {}) {
    const readJson = async (name) => JSON.parse(decoder.decode(await platform.read(name)));
    const config = await readJson('config.json');
    if (config.model_type !== FORMAT || config.format_version !== FORMAT_VERSION) {
      throw new Error(
        `not a ${FORMAT} v${FORMAT_VERSION} folder (config.json says ${config.model_type} v${config.format_version}): ` +
          'export the model with `embedopt export static -m static:... -o DIR`',
      );
    }
    const tokenizerJson = await readJson('tokenizer.json');
    const tokenizer = new Tokenizer(tokenizerJson, {});
    if (config.tokenizer_tables) {
      const tables = await readJson(config.tokenizer_tables);
      const normalize = makeNormalizer(tables.normalizer);
      const preTokenize = makePreTokenizer(tables.pre_tokenizer);
      tokenizer.normalizer = normalize;
      tokenizer.pre_tokenizer = (text) => preTokenize(text);
    }
    if (tokenizerJson.model?.type === 'WordPiece') cacheWords(tokenizer.model);
    const session = await platform.ort.InferenceSession.create(
      await platform.modelSource(platform.read),
      platform.sessionOptions,
    );
    return new this({ ort: platform.ort, session, tokenizer, config, batchTokens: options.batchTokens });
  }

  /** Token ids of one text as model2vec takes them: cut to `max_chars` code points, no special tokens,
   * at most `max_length` ids (the graph itself drops the unknown token). */
  tokenize(text) {
    if (typeof text !== 'string') throw new TypeError(`texts must be strings, got ${typeof text}`);
    const cut = this.maxChars == null ? text : firstCodePoints(text, this.maxChars);
    const ids = this.tokenizer.encode(cut, { add_special_tokens: false }).ids;
    return this.maxLength == null || ids.length <= this.maxLength ? ids : ids.slice(0, this.maxLength);
  }

  /**
   * Embed `texts`; one Float32Array of `dim` values per text, in order (views into one buffer: `rows[0].buffer`).
   * @param {string[]} texts
   * @returns {Promise<Float32Array[]>}
   */
  async encode(texts) {
    if (!Array.isArray(texts)) throw new TypeError('encode takes an array of strings');
    const dim = this.dim;
    const ids = texts.map((t) => this.tokenize(t));
    const out = new Float32Array(texts.length * dim);
    for (const batch of planBatches(ids.map((r) => r.length), this.batchTokens)) {
      const width = Math.max(1, ids[batch[batch.length - 1]].length);
      const inputIds = new Int32Array(batch.length * width);
      const mask = new Int32Array(batch.length * width);
      batch.forEach((i, row) => {
        inputIds.set(ids[i], row * width);
        mask.fill(1, row * width, row * width + ids[i].length);
      });
      const shape = [batch.length, width];
      const result = await this.session.run({
        input_ids: new this.ort.Tensor('int32', inputIds, shape),
        attention_mask: new this.ort.Tensor('int32', mask, shape),
      });
      const data = result.embeddings.data;
      batch.forEach((i, row) => out.set(data.subarray(row * dim, (row + 1) * dim), i * dim));
    }
    return Array.from({ length: texts.length }, (_, i) => out.subarray(i * dim, (i + 1) * dim));
  }

  /** Free the onnxruntime session. */
  async release() {
    await this.session.release();
  }
}
