# One entry point for humans and CI. `make install` is idempotent: it re-installs only when
# pyproject.toml or constraints.txt changed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-fast test-integration test-distributed bench lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv
	$(PY) -m uv pip install -q --compile-bytecode --python $(PY) -c constraints.txt -e ".[dev,llava]"
	# the optional deepspeed extra builds against the torch installed above; the tests cross-check its
	# memory estimators when it is there (and say they skipped when it is not)
	$(PY) -m uv pip install -q --compile-bytecode --python $(PY) --no-build-isolation -c constraints.txt "deepspeed" \
		|| echo "WARNING: deepspeed did not build; tests that need it will be skipped"
	@touch $(STAMP)

demo: install
	$(VENV)/bin/vlmforge pretrain -c recipes/demo/clip-digits.yaml --yes

test: install
	$(PY) -m pytest -m "not gpu" tests

test-fast: install
	$(PY) -m pytest -m "not gpu" tests/unit

test-integration: install
	$(PY) -m pytest -m "not gpu" tests/integration tests/hostile

test-distributed: install
	$(PY) -m pytest -m "not gpu" tests/distributed

bench: install
	OMP_NUM_THREADS=1 $(PY) benchmarks/train_overhead.py
	OMP_NUM_THREADS=1 $(PY) benchmarks/plan_accuracy.py
	OMP_NUM_THREADS=1 $(PY) benchmarks/loader.py
	OMP_NUM_THREADS=1 $(PY) benchmarks/curate.py
	OMP_NUM_THREADS=1 $(PY) benchmarks/openclip_parity.py
	OMP_NUM_THREADS=1 $(PY) benchmarks/family_throughput.py
	OMP_NUM_THREADS=1 $(PY) benchmarks/startup.py

lint: install
	$(PY) -m ruff check src cli tests benchmarks
	$(PY) -m ruff format --check src cli tests benchmarks

format: install
	$(PY) -m ruff format src cli tests benchmarks
	$(PY) -m ruff check --fix src cli tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
