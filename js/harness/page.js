// Runs in the browser: load the exported model, embed the texts, time it, and post the vectors back.
import { StaticModel } from '/pkg/src/web.js';

const status = document.getElementById('status');
const repeat = Number(new URLSearchParams(location.search).get('repeat') ?? '3');

async function post(path, body, type) {
  await fetch(path, { method: 'POST', body, headers: { 'content-type': type } });
}

try {
  let started = performance.now();
  const model = await StaticModel.load('/model/');
  const loadSeconds = (performance.now() - started) / 1000;
  const texts = await (await fetch('/texts.json')).json();
  const rows = await model.encode(texts); // also the warm-up
  const seconds = [];
  for (let r = 0; r < repeat; r++) {
    started = performance.now();
    await model.encode(texts);
    seconds.push((performance.now() - started) / 1000);
  }
  started = performance.now();
  for (const t of texts) model.tokenize(t);
  const tokenizeSeconds = (performance.now() - started) / 1000;
  const flat = new Float32Array(rows.length * model.dim);
  rows.forEach((r, i) => flat.set(r, i * model.dim));
  await post('/vectors', flat.buffer, 'application/octet-stream');
  await post('/result', JSON.stringify({
    user_agent: navigator.userAgent, texts: texts.length, dim: model.dim, load_seconds: loadSeconds, seconds,
    tokenize_seconds: tokenizeSeconds, cross_origin_isolated: globalThis.crossOriginIsolated === true,
  }), 'application/json');
  status.textContent = 'done';
} catch (error) {
  status.textContent = String(error?.stack ?? error);
  await post('/result', JSON.stringify({ error: String(error?.stack ?? error) }), 'application/json');
}
