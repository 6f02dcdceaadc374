// Browser entry: files fetched from a URL, the graph on onnxruntime-web (WebAssembly, CPU).
import * as ortWeb from 'onnxruntime-web/wasm';
import { StaticModel as Core } from './core.js';

export { FORMAT, FORMAT_VERSION, firstCodePoints, planBatches } from './core.js';

export class StaticModel extends Core {
  /**
   * Load a folder written by `embedopt export static`, served at `url` (a folder URL, relative to the page).
   * @param {string|URL} url
   * @param {{threads?: number, wasmPaths?: string, batchTokens?: number, ort?: object, fetch?: Function,
   *   sessionOptions?: object}} [options] `threads`: WebAssembly threads (more than 1 needs a
   *   cross-origin-isolated page); `wasmPaths`: where onnxruntime-web's .wasm files are served, when not beside
   *   its module; `ort`: another onnxruntime-web build (webgpu, for example).
   */
  static async load(url, options = {}) {
    const ort = options.ort ?? ortWeb;
    if (options.threads != null) ort.env.wasm.numThreads = options.threads;
    if (options.wasmPaths != null) ort.env.wasm.wasmPaths = options.wasmPaths;
    const fetchFn = options.fetch ?? globalThis.fetch.bind(globalThis);
    const text = String(url);
    const base = new URL(text.endsWith('/') ? text : `${text}/`, globalThis.location?.href);
    const read = async (name) => {
      const response = await fetchFn(new URL(name, base));
      if (!response.ok) throw new Error(`could not fetch ${new URL(name, base)}: HTTP ${response.status}`);
      return new Uint8Array(await response.arrayBuffer());
    };
    return this._open(
      {
        ort,
        read,
        modelSource: (r) => r('model.onnx'),
        sessionOptions: { executionProviders: ['wasm'], ...(options.sessionOptions ?? {}) },
      },
      options,
    );
  }
}
