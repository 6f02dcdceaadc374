# The two commands a new user needs: `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.embedopt-installed
export HF_HUB_OFFLINE ?= 1

.PHONY: demo test lint docs serve bench reranker finetune base-check install services js js-tools onnx-check clean

# apt-get needs root: use sudo when not root.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: this machine has a local CPU wheel of 2.13.0, and any other torch that pip might pick
# (as a dependency of sentence-transformers) pulls gigabytes of CUDA packages.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -q torch==2.13.0
	$(BIN)/pip install --disable-pip-version-check -q -e ".[dev]"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check src tests examples bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

# The documentation site (docs/, and the API reference generated from the docstrings) into site/. --strict: a
# broken link, or a docstring reference that points nowhere, fails the build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d site

# The gateway on the embedded default (MiniLM and the static model, memory+SQLite cache) on 127.0.0.1:8080; it
# prints a curl line that works once the models are loaded. CONFIG=serve.toml for your own models, keys, limits.
serve: $(STAMP)
	$(BIN)/embedopt serve $(if $(CONFIG),--config $(CONFIG))

# The tests start their own redis-server (Debian's package) on free loopback ports; install it when missing.
services:
	@command -v redis-server >/dev/null 2>&1 || [ -x /usr/sbin/redis-server ] || { \
	  echo "redis-server is missing: installing Debian's redis-server package"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }

# The JavaScript loader of exported static models (js/) and its parity tests need Node.js and, for the browser
# test, Debian's chromium; node_modules comes from the committed lock file (install scripts off: onnxruntime-node's
# would fetch CUDA files, and its CPU binaries ship in the package).
js-tools:
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; }
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

js/node_modules/.package-lock.json: js/package-lock.json | js-tools
	cd js && npm ci --ignore-scripts --no-audit --no-fund

js: js/node_modules/.package-lock.json

test: lint services js
	$(BIN)/python -m pytest -q -p no:cacheprovider

# No trained cross-encoder ships in a package: train one from the packaged MiniLM weights on debian-packages
# (about 30 minutes on 2 CPU cores, once; cached under $$EMBEDOPT_HOME/rerankers).
DATASETS ?= ../shared/datasets
reranker: $(STAMP)
	$(BIN)/embedopt train-reranker $(DATASETS)/debian-packages

# Fine-tune MiniLM, and tune the distilled static model, on manpages split by document; score both on the
# held-out split before and after (about 11 minutes on 2 CPU cores). The reports are copied to bench/results.
FINETUNED ?= $${EMBEDOPT_HOME:-$$HOME/.cache/embedopt}/finetuned
finetune: $(STAMP)
	$(BIN)/embedopt finetune $(DATASETS)/manpages -o $(FINETUNED)/minilm-manpages
	$(BIN)/embedopt distill --train $(DATASETS)/manpages -o $(FINETUNED)/static-manpages
	cp $(FINETUNED)/minilm-manpages/finetune-report.json bench/results/finetune-minilm-manpages.json
	cp $(FINETUNED)/static-manpages/finetune-report.json bench/results/finetune-static-manpages.json

bench: $(STAMP) services reranker
	$(BIN)/python bench/embed.py
	$(BIN)/python bench/cache.py
	$(BIN)/python bench/semantic_cache.py
	$(BIN)/python bench/hamming.py
	$(BIN)/python bench/retrieval_quality.py
	$(BIN)/python bench/search.py
	$(BIN)/python bench/static_js.py
	bench/peers/setup_infinity.sh
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/summary.py

# The base install needs numpy only: install it alone in a second venv, import it, and check that a feature
# whose extra is missing says which extra to install.
base-check:
	rm -rf .venv-base
	$(PYTHON) -m venv .venv-base
	.venv-base/bin/pip install --disable-pip-version-check -q .
	.venv-base/bin/python tests/base_install_check.py

# The [onnx] extra embeds with no torch: export MiniLM with the full venv (torch is needed to export, not to run),
# then install ".[onnx]" alone in a third venv and embed with the export there (tests/onnx_install_check.py).
ONNX_EXPORT := build/onnx-check/minilm
$(ONNX_EXPORT)/embedopt-onnx.json: $(STAMP)
	$(BIN)/embedopt export onnx -m minilm -o $(ONNX_EXPORT) > /dev/null

onnx-check: $(ONNX_EXPORT)/embedopt-onnx.json
	rm -rf .venv-onnx
	$(PYTHON) -m venv .venv-onnx
	.venv-onnx/bin/pip install --disable-pip-version-check -q ".[onnx]"
	.venv-onnx/bin/python tests/onnx_install_check.py $(ONNX_EXPORT)

clean:
	rm -rf $(VENV) .venv-base .venv-onnx build site *.egg-info src/*.egg-info
