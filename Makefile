# make run   install what LIMEN needs and serve it on $LIMEN_BIND (127.0.0.1:8080)
# make test  install that plus the test tools, and run every test tier
# make bench install that plus websockify, and run the benchmarks
VENV   := .venv
PYTHON ?= python3

.PHONY: run test host host-test bench

run: host $(VENV)/.run-deps
	$(VENV)/bin/gunicorn -c gunicorn.conf.py app:app

test: host-test $(VENV)/.test-deps
	LIMEN_REQUIRE_ALL_TIERS=1 $(VENV)/bin/python -m pytest

bench: host-test $(VENV)/.bench-deps
	$(VENV)/bin/python bench/table_poll.py
	$(VENV)/bin/python bench/console.py

host:
	scripts/host-setup

host-test:
	scripts/host-setup --test

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.run-deps: requirements.txt | $(VENV)/bin/python
	$(VENV)/bin/pip install -q -r requirements.txt
	touch $@

$(VENV)/.test-deps: requirements-dev.txt requirements.txt | $(VENV)/bin/python
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	touch $@ $(VENV)/.run-deps

$(VENV)/.bench-deps: requirements-bench.txt requirements-dev.txt requirements.txt | $(VENV)/bin/python
	$(VENV)/bin/pip install -q -r requirements-bench.txt
	touch $@ $(VENV)/.test-deps $(VENV)/.run-deps
