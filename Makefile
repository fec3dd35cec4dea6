# Every target creates .venv (pinned requirements + this package, editable) when it is missing,
# so on a fresh clone `make figures` or `make test` alone is enough.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup test figures short reproduce cpu-segment benchmarks clean-venv

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

## the test suite (CPU only, no network, no data outside the repository); executes the notebooks too.
## One worker per core (pytest-xdist), the slow tests handed out first; plain `pytest` runs it in one process.
test: $(STAMP)
	$(PY) -m pytest -n auto --dist load --maxschedchunk 1

## regenerate every figure and table in figures/ from the run records in results/ (no data, no GPU)
figures: $(STAMP)
	$(PY) experiments/make_figures.py

## every run at the paper's schedule, then the analyses, the published weights and the figures. Resumable:
## interrupt it (or give it TIME_LIMIT=seconds, for experiments/replicate.py) and run `make reproduce` again.
TIME_LIMIT ?=
LIMIT := $(if $(TIME_LIMIT),--time-limit $(TIME_LIMIT),)
reproduce: $(STAMP)
	@echo "make reproduce: every network at the paper's schedule (64k iterations, batch 128), in priority order"
	@echo "  (experiments/replicate.py --list shows the plan). On one GPU several runs train at once;"
	@echo "  benchmarks/gpu_speed.py measures how long that takes. On a 2-core CPU: weeks."
	$(PY) experiments/replicate.py --download $(LIMIT)
	$(PY) experiments/confusion.py
	$(PY) experiments/layer_responses.py --with-110
	$(PY) experiments/publish_weights.py
	$(PY) experiments/make_figures.py

## what a CPU can show (a few hours on 2 cores): Figure 6 and Table 6 at 1/32 of the paper's schedule on all
## 50k images, the tutorial recipe in full, their confusion matrices and layer responses. Resumable.
short: $(STAMP)
	$(PY) experiments/replicate.py --short $(LIMIT)
	$(PY) experiments/confusion.py --short
	$(PY) experiments/layer_responses.py --short
	$(PY) experiments/make_figures.py

## one segment of ResNet-56 at the paper's full schedule on a CPU (option A, seed 0, float32: its own run,
## results/runs/resnet56-A-paper-s0-fp32): resumes from the folder's checkpoint, ends cleanly before
## TIME_LIMIT seconds; then commit the folder, checkpoint included (docs/reproducing.md). The execution
## is the one benchmarks/cpu_speed.py chose, kept for the whole run.
CPU_RUN_FLAGS := --arch resnet56 --precision fp32 --device cpu --threads 2
cpu-segment: $(STAMP)
	$(PY) experiments/train.py $(CPU_RUN_FLAGS) --resume --no-progress $(LIMIT)

benchmarks: $(STAMP)
	$(PY) benchmarks/data_throughput.py
	$(PY) benchmarks/train_throughput.py

clean-venv:
	rm -rf $(VENV)
