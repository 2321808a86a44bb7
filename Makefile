# Two commands on a fresh machine:
#   make run    install, then train TD3 on the embedded simulator (metrics live on :9464)
#   make test   install, then run every test (CI runs this through .ci/run)
# and, while or after it trains:
#   make monitor   Prometheus + Alertmanager (Debian's) with cluster/'s rules on the newest run
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CONFIG ?= configs/quickstart.yaml
# Extra `rllib-av train` arguments, e.g. make run ARGS='--set run.total_env_steps=5000'
ARGS ?=
# The run `make monitor` watches: the newest run directory under runs/.
RUN ?= $(shell ls -td runs/*/ 2>/dev/null | head -n 1)

.PHONY: install system-deps run monitor test bench mutation

install: $(VENV)/.installed

# torch 2.13.0 first: its CPU build lies on disk, and anything asking for torch
# later is then satisfied instead of pulling the CUDA build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,bench]"
	touch $@

# Debian packages the tests use for real: Prometheus, promtool and Alertmanager
# (monitoring), Chromium (opens the run report headless).
system-deps:
	@command -v promtool >/dev/null && command -v prometheus-alertmanager >/dev/null && \
		command -v chromium >/dev/null || \
		($(SUDO) apt-get update -q && \
		 $(SUDO) apt-get install -y -q prometheus prometheus-alertmanager chromium)

run: install
	$(VENV)/bin/rllib-av train --config $(CONFIG) $(ARGS)

monitor: install system-deps
	$(if $(RUN),,$(error no run directory under runs/ yet: `make run` trains one))
	$(VENV)/bin/rllib-av monitor $(RUN)

test: install system-deps
	$(VENV)/bin/pytest

bench: install
	$(PY) benchmarks/td3_vs_sb3.py

# Mutation testing (opt-in, not part of `make test`; see docs/mutation_testing.md):
# the core modules listed in pyproject.toml's [tool.mutmut] against the fast
# tests, then the alert rules against their promtool tests. MUTANTS narrows the
# first, e.g.  make mutation MUTANTS='rllib_av.health.q_bound.*'
# Scores: benchmarks/results/mutation_score.json, alert_rule_mutations.json.
MUTANTS ?=
mutation: install
	$(PY) -m pip install -q -e ".[mutation]"
	start=$$(date +%s); $(VENV)/bin/mutmut run $(MUTANTS); \
		$(PY) benchmarks/mutation_score.py --elapsed-s $$(( $$(date +%s) - start ))
	$(PY) benchmarks/mutate_alert_rules.py
