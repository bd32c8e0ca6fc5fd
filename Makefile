# Everything sets up .venv on first use: a fresh machine needs only Python 3.10+.
PY      ?= python3
VENV    := .venv
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
export OMP_NUM_THREADS ?= 2
export TOKENIZERS_PARALLELISM = false
export OMP_WAIT_POLICY ?= PASSIVE   # idle OpenMP threads sleep instead of spinning on a busy 2-core machine
export HF_HUB_OFFLINE ?= 1

.PHONY: setup demo test test-slow test-all test-slurm tables bench bench-gpu check-scorers scorer-fixtures ref-env ref-lock clean lock
.PHONY: vbench-env check-vbench vbench-fixture

# .venv is built from the lock (requirements/lock.txt: every package pinned, made by `make lock` from pyproject.toml's
# ranges, dev extra included), then the project itself without dependencies. The lock names torch==2.13.0: pip takes
# the CPU wheel where one lies in its find-links (this machine's /opt/wheels), PyPI's build elsewhere.
# docs/environments.md says when and how to refresh it.
LOCK := requirements/lock.txt
$(STAMP): pyproject.toml $(LOCK)
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -r $(LOCK)
	$(PYTHON) -m pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

# `make lock`: re-resolve the lock after a dependency was added or changed in pyproject.toml (pins already in the lock
# are kept where they still fit; `make lock UPGRADE=1` takes the newest releases the ranges allow), rebuild .venv
# from it and run the tests. The resolver is uv (pinned below, installed into .venv); torch is resolved against the
# CPU wheel (requirements/constraints.txt, from TORCH_WHEELS: a folder or a page of wheels) and written without its
# local "+cpu" label, so that the same lock installs PyPI's torch on a GPU machine.
UV_VERSION  ?= 0.13.9
TORCH_WHEELS ?= $(if $(wildcard /opt/wheels/torch-*),/opt/wheels,https://download.pytorch.org/whl/cpu/torch/)
lock:
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q "uv==$(UV_VERSION)"
	$(VENV)/bin/uv pip compile -q pyproject.toml --extra dev $(if $(UPGRADE),--upgrade) --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 --find-links $(TORCH_WHEELS) -c requirements/constraints.txt \
	  --custom-compile-command "make lock" -o $(LOCK)
	sed -i 's/^torch==\([0-9.]*\)+cpu$$/torch==\1/' $(LOCK)
	$(MAKE) setup
	$(MAKE) test

demo: setup  ## GRPO and ViPO side by side on the toy world (redness reward): ~2 min on 2 cores, 146 CPU-s
	$(PYTHON) demo.py

test: setup  ## the default test run (slow tests excluded)
	$(PYTHON) -m pytest

test-slow: setup  ## only the slow tests (pretraining, PostgreSQL, long runs)
	$(PYTHON) -m pytest -m slow

test-all: setup
	$(PYTHON) -m pytest -m "slow or not slow"

# A real single-node SLURM (Debian packages, installed on first use; root only): start it, run the SLURM tests, stop
# every daemon it started. Where SLURM cannot start (not root, no apt) it says so in one line and succeeds.
SLURM_DIR ?= /tmp/vipo-slurm
test-slurm: setup  ## the launcher tests against a real SLURM (array jobs, status, requeue, 2 tasks, Optuna on PostgreSQL)
	@export VIPO_SLURM_DIR=$(SLURM_DIR); started=0; \
	if ! bash checks/slurm_cluster.sh running; then \
	  bash checks/slurm_cluster.sh start; rc=$$?; \
	  if [ $$rc = 3 ]; then echo "test-slurm: skipped (SLURM cannot start here)"; exit 0; fi; \
	  [ $$rc = 0 ] || exit $$rc; started=1; fi; \
	SLURM_CONF=$(SLURM_DIR)/slurm.conf VIPO_TEST_SLURM=1 $(PYTHON) -m pytest -m slurm -p no:cacheprovider --basetemp=$(SLURM_DIR)-tests \
	    tests/test_launchers.py tests/test_slurm.py; rc=$$?; \
	if [ $$started = 1 ]; then bash checks/slurm_cluster.sh stop; fi; exit $$rc

RESULTS    ?= results
TABLES_OUT ?= analysis/out
tables: setup  ## every table (Markdown, LaTeX, CSV) and curve figure of the runs under $(RESULTS) -> $(TABLES_OUT)/
	$(PYTHON) -m analysis.tables $(RESULTS) --out $(TABLES_OUT)

bench: setup  ## speed targets, reported as ratios measured in one run
	$(PYTHON) bench/bench_psm.py
	$(PYTHON) bench/bench_train.py
	$(PYTHON) bench/bench_toy.py
	$(PYTHON) bench/bench_maps.py
	$(PYTHON) bench/bench_compute.py

bench-gpu: setup
	$(PYTHON) bench/bench_gpu.py

# The reference scorer packages need torchvision, which does not load beside the CPU torch of .venv: they live in
# .venv-ref (torch 2.14.1 + torchvision 0.29.1, a CUDA build that runs on the CPU; ~7 GB; see checks/ref_env.sh).
REF := .venv-ref

$(REF)/.installed: checks/ref_env.sh checks/ref-lock.txt checks/ref-tf4-lock.txt | $(STAMP)
	bash checks/ref_env.sh $(PY)
	touch $@

ref-env: $(REF)/.installed

# re-resolve the reference environments from the registry's current releases (into a new .venv-ref) and rewrite
# checks/ref-lock.txt and checks/ref-tf4-lock.txt; then `make check-scorers`, and commit the locks if it passes
ref-lock: | $(STAMP)
	rm -rf $(REF)
	REF_UNLOCKED=1 bash checks/ref_env.sh $(PY)
	touch $(REF)/.installed

check-scorers: ref-env  ## full-size HPSv2.1 / PickScore / ImageReward vs the reference packages, ~10 min, 9 GB
	$(REF)/bin/python checks/check_scorers.py --only hps
	$(REF)/bin/python checks/check_scorers.py --only pickscore
	cd $(REF) && PYTHONPATH=tf4:.. bin/python ../checks/check_scorers.py --only imagereward

scorer-fixtures: ref-env  ## rewrite tests/fixtures/scorers from the reference packages
	$(REF)/bin/python checks/make_scorer_fixtures.py --only hps,pickscore
	cd $(REF) && PYTHONPATH=tf4 bin/python ../checks/make_scorer_fixtures.py --only imagereward

# VBench (vbench 0.1.5 pins transformers 4.33.2 and numpy < 2) lives in .venv-vbench, called as a subprocess by
# python -m vipo.eval ... metrics=[vbench] (docs/vbench.md); exact pins in checks/vbench-requirements.txt.
VBENCH := .venv-vbench

$(VBENCH)/.installed: checks/vbench_env.sh checks/vbench-requirements.txt
	bash checks/vbench_env.sh $(PY)
	touch $@

vbench-env: $(VBENCH)/.installed  ## the VBench environment, ~7 minutes on 2 cores, 6.7 GB

check-vbench: setup vbench-env  ## the real VBench on tiny-Wan videos (slow tests), ~7 minutes on 2 busy cores
	VIPO_VBENCH_ENV=$(VBENCH) $(PYTHON) -m pytest -m "slow or not slow" tests/test_vbench_e2e.py tests/test_vbench_suite.py

vbench-fixture: setup  ## rewrite tests/fixtures/vbench from VBench's cal_final_score.py (VBENCH_REPO=<checkout>)
	$(PYTHON) checks/make_vbench_fixture.py --vbench $(VBENCH_REPO)

clean:
	rm -rf $(VENV) $(REF) $(VBENCH) .pytest_cache .hypothesis
