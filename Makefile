# Two commands do everything on a fresh machine (Python 3.11, no GPU):
#   make demo   set up, train the CPU demo recipe, evaluate base vs adapter on FPB
#   make test   set up, lint (ruff), run the test suite (make test-fast skips the slow integration tests)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
FINLORA := $(VENV)/bin/finlora
STAMP  := $(VENV)/.installed
# SkyPilot (finlora sky) in an environment of its own: its dependencies never touch $(VENV).
# `make setup-sky` builds it; the tests need it (they parse every rendered task with SkyPilot's own parser).
SKY_VENV  := .venv-sky
SKY_STAMP := $(SKY_VENV)/.installed
MODEL  := models/base_model/smollm2-135m-instruct/config.json
export HF_HUB_OFFLINE=1
export HF_DATASETS_OFFLINE=1
export AXOLOTL_DO_NOT_TRACK=1

.PHONY: setup setup-sky lock demo demo-screenshot test test-fast lint recipes clean-demo

setup: $(STAMP) $(MODEL)

setup-sky: $(SKY_STAMP)

# Installs come from locks: every package pinned with its sha256 hashes and installed with --no-deps, so nothing
# is resolved (about 1 min instead of 7 on a fresh CI machine). requirements*.txt stay the lists people edit;
# after editing one, `make lock` rewrites the locks (tests/packaging fails until it has).
#   requirements.lock      .venv: requirements.txt, then requirements-model.txt compiled without its dependencies
#   requirements-sky.lock  .venv-sky: requirements-sky.txt
#   requirements-uv.lock   uv $(UV_VERSION) itself, bootstrapped into each venv with pip
# The locks are for CPU machines of the CI kind (Python 3.11, x86_64 Linux, glibc 2.36): pip there is configured
# (`pip config list`) with local wheel sources, /opt/wheels holding torch 2.13.0+cpu, so the lock pins the CPU
# torch and no nvidia CUDA libraries. uv does not read pip's configuration: UV_SOURCES names the same sources.
# Pods do not use the locks: pip install -r requirements.txt -r requirements-gpu.txt (README); on a machine
# without /opt/wheels, make setup resolves requirements.txt with pip as before.
UV_VERSION := 0.13.8
UV_SOURCES := $(strip $(if $(wildcard /opt/wheels),--find-links /opt/wheels) \
	$(foreach d,/opt/pypi/simple /opt/pypi-more/simple,$(if $(wildcard $(d)),--extra-index-url file://$(d))) \
	--index-strategy unsafe-best-match)
# $(call uv-install,VENV): install the exact pins of lock files into VENV, checking every hash.
uv-install = $(1)/bin/uv pip install --python $(1)/bin/python --no-deps --require-hashes $(UV_SOURCES)

$(VENV)/bin/uv $(SKY_VENV)/bin/uv: %/bin/uv: requirements-uv.lock
	$(PYTHON) -m venv $*
	$*/bin/python -m pip install --no-deps --require-hashes -r requirements-uv.lock
	touch $@

$(SKY_STAMP): $(SKY_VENV)/bin/uv requirements-sky.lock
	$(call uv-install,$(SKY_VENV)) -r requirements-sky.lock
	touch $@

ifneq ($(wildcard /opt/wheels),)
$(STAMP): $(VENV)/bin/uv requirements.lock pyproject.toml
	$(call uv-install,$(VENV)) -r requirements.lock
	$(VENV)/bin/uv pip install --python $(PY) --no-deps --no-build-isolation -e .
	touch $@
else
# Not the CI kind (no /opt/wheels, so no torch 2.13.0+cpu for requirements.lock): pip resolves requirements.txt.
$(STAMP): requirements.txt requirements-model.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps -r requirements-model.txt
	$(PY) -m pip install --no-deps -e .
	touch $@
endif

# `make lock` rewrites the three locks, keeping every pin that still fits (uv reads the old lock as its
# preferences; `make lock UPGRADE=--upgrade` moves everything to the newest versions allowed). Each lock starts
# with a header: the commands, and the sha256 of each input file (tests/packaging compares them).
COMPILE := pip compile --quiet --generate-hashes --no-header --python-version 3.11 --python-platform x86_64-manylinux_2_36 \
	$(UV_SOURCES)
LOCK_MAIN  := $(COMPILE) requirements.txt -o requirements.lock
LOCK_MODEL := $(COMPILE) --no-deps requirements-model.txt -o requirements-model.lock.tmp
LOCK_SKY   := $(COMPILE) requirements-sky.txt -o requirements-sky.lock
LOCK_UV    := $(COMPILE) --no-deps - -o requirements-uv.lock
# $(call lock-header,LOCK,INPUT FILES,COMMAND...)
lock-header = { echo '\# $(1): written by `make lock`, do not edit. Every package pinned with its hashes, installed with --no-deps.'; \
	echo '\# For CPU machines of the CI kind (Python 3.11, x86_64 glibc 2.36 Linux, pip sources with torch 2.13.0+cpu in /opt/wheels).'; \
	echo '\# `make lock` runs:'; \
	printf '\#   %s\n' $(3); \
	for f in $(2); do echo "\# input $$f sha256=$$(sha256sum $$f | cut -d' ' -f1)"; done; }
# $(call with-header,LOCK,INPUT FILES,COMMAND...): put the header above what uv wrote into LOCK.
with-header = $(call lock-header,$(1),$(2),$(3)) > $(1).tmp && cat $(1) >> $(1).tmp && mv $(1).tmp $(1)

lock: $(VENV)/bin/uv
	@test -d /opt/wheels || { echo "error: the locks are for the CI machine kind (torch 2.13.0+cpu in /opt/wheels): run make lock there" >&2; exit 2; }
	$(VENV)/bin/uv $(LOCK_MAIN) $(UPGRADE)
	$(VENV)/bin/uv $(LOCK_MODEL)
	echo '# requirements-model.txt, compiled with --no-deps: installed without its dependencies' >> requirements.lock
	cat requirements-model.lock.tmp >> requirements.lock && rm requirements-model.lock.tmp
	$(call with-header,requirements.lock,requirements.txt requirements-model.txt,"uv $(LOCK_MAIN)" "uv $(LOCK_MODEL)  (appended below)")
	$(VENV)/bin/uv $(LOCK_SKY) $(UPGRADE)
	$(call with-header,requirements-sky.lock,requirements-sky.txt,"uv $(LOCK_SKY)")
	echo 'uv==$(UV_VERSION)' | $(VENV)/bin/uv $(LOCK_UV)
	$(call with-header,requirements-uv.lock,,"echo uv==$(UV_VERSION) | uv $(LOCK_UV)  (UV_VERSION in the Makefile)")

$(MODEL): $(STAMP)
	$(PY) -m lora.core.base_model

# Each phase runs under lora/core/phase_times.py (system python3, standard library only), which prints their
# wall-clock times as the last lines (docs/demo.md); a phase with nothing to do (already installed) takes ~0 s.
PHASES := $(PYTHON) -m lora.core.phase_times eval_results/demo/phases.json

demo:
	$(PHASES) start
	$(PHASES) run install -- $(MAKE) --no-print-directory $(STAMP)
	$(PHASES) run convert -- $(MAKE) --no-print-directory $(MODEL)
	$(PHASES) run train -- $(FINLORA) train sentiment_smollm2_cpu
	$(PHASES) run eval -- $(FINLORA) eval lora_adapters/sentiment_smollm2_cpu --tasks fpb --out eval_results/demo
	$(PHASES) report

# The Gradio demo (finlora demo) in a real headless Chromium; saves docs/demo-app.png. Needs Debian's
# chromium + chromium-driver (not in CI, so `make test` leaves this check out: pytest marker `browser`).
# Shows lora_adapters/ when it holds a trained adapter (after make demo), else a throwaway fixture adapter.
demo-screenshot: setup
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ echo "error: needs chromium and chromedriver: apt-get install -y chromium chromium-driver" >&2; exit 2; }
	$(PY) -m pip install -r requirements-browser.txt
	DEMO_SCREENSHOT=docs/demo-app.png $(if $(wildcard lora_adapters/*/run.json),DEMO_ADAPTERS=lora_adapters) \
		$(PY) -m pytest -q -m browser tests/use/test_demo.py

test: setup setup-sky lint
	$(PY) -m pytest -q

test-fast: setup setup-sky lint
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check .

recipes: setup
	$(FINLORA) render

clean-demo:
	rm -rf lora_adapters/sentiment_smollm2_cpu eval_results/demo
