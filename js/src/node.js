// Node entry: files from a folder, the graph on onnxruntime-node (native CPU).
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import * as ortNode from 'onnxruntime-node';
import { StaticModel as Core } from './core.js';

export { FORMAT, FORMAT_VERSION, firstCodePoints, planBatches } from './core.js';

export class StaticModel extends Core {
  /**
   * Load a folder written by `embedopt export static`.
   * @param {string} dir the folder
   * @param {{threads?: number, batchTokens?: number, ort?: object, sessionOptions?: object}} [options]
   *   `threads`: onnxruntime's intra-op threads (default: its own choice); `batchTokens`: ids per graph call
   *   after padding (default 2048); `ort`: another onnxruntime module with the same API (onnxruntime-web).
   */
  static async load(dir, options = {}) {
    const ort = options.ort ?? ortNode;
    const sessionOptions = { ...(options.sessionOptions ?? {}) };
    if (options.threads != null) sessionOptions.intraOpNumThreads = options.threads;
    return this._open(
      {
        ort,
        read: (name) => readFile(path.join(dir, name)),
        // a path lets onnxruntime-node read the file itself; another runtime gets the bytes
        modelSource: async (read) => (options.ort ? read('model.onnx') : path.join(dir, 'model.onnx')),
        sessionOptions,
      },
      options,
    );
  }
}
