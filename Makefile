# Every target creates .venv (pinned requirements + this package, editable) when it is missing,
# so on a fresh clone `make figures` or `make test` alone is enough.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
JOBS   ?= 1

.PHONY: setup test figures reproduce benchmarks clean-venv

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

## the test suite (CPU only, no network, no data outside the repository); executes the notebooks too
test: $(STAMP)
	$(PY) -m pytest

## regenerate every figure and table in figures/ from the run records in results/ (no data, no GPU)
figures: $(STAMP)
	$(PY) experiments/make_figures.py

## rerun every experiment at the paper's schedule, then redraw the figures (see README for timings)
reproduce: $(STAMP)
	@echo "make reproduce: every experiment at the paper's schedule (64k iterations, batch 128): 20 networks."
	@echo "  On a 2-core CPU: about 5 to 6 days (ResNet-20 alone: about 3.7 hours; README, Reproducing)."
	@echo "  On one GPU: not measured yet (benchmarks/gpu_speed.py is the measurement)."
	@echo "  Runs resume where they stopped: interrupt at will and run 'make reproduce' again."
	$(PY) experiments/degradation.py --with-110 --download --jobs $(JOBS)
	$(PY) experiments/shortcuts.py --download --jobs $(JOBS)
	$(PY) experiments/layer_responses.py --download
	$(PY) experiments/confusion.py --download
	$(PY) experiments/make_figures.py

benchmarks: $(STAMP)
	$(PY) benchmarks/data_throughput.py
	$(PY) benchmarks/train_throughput.py

clean-venv:
	rm -rf $(VENV)
