# make run   install what LIMEN needs and serve it on $LIMEN_BIND (127.0.0.1:8080)
# make test  install that plus the test tools, check the code (make check), and run every test tier
# make check the layers (import-linter), lint and format (ruff) and types (mypy)
# make demo-image  build the Debian 12 guest image, put it in LIMEN's media directory and
#                  register it in the library: create a VM from it at once
# make bench install that plus websockify, and run the benchmarks
VENV   := .venv
PYTHON ?= python3
LINTED := limen app.py gunicorn.conf.py


.PHONY: run test check host host-test bench guest-image demo-image

run: host $(VENV)/.run-deps
	$(VENV)/bin/gunicorn -c gunicorn.conf.py app:app

test: host-test check guest-image
	LIMEN_REQUIRE_ALL_TIERS=1 $(VENV)/bin/python -m pytest

check: $(VENV)/.test-deps
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/mypy

bench: host-test $(VENV)/.bench-deps
	$(VENV)/bin/python bench/table_poll.py
	$(VENV)/bin/python bench/console.py
	$(VENV)/bin/python bench/guest_boot.py

host:
	scripts/host-setup

# The guest tier's image: about 1.5 minutes the first time, then cached by the script's hash.
guest-image: host-test
	scripts/build-guest-image >/dev/null

# The file is named by the image's hash: a new build never overwrites a base VMs are built on.
demo-image: host $(VENV)/.run-deps
	image="$$(scripts/build-guest-image)" && \
	$(VENV)/bin/flask --app app media register "$$(basename "$$image")" --copy-from "$$image" \
		--name "Debian 12 (LIMEN demo, $$(basename "$$image" .qcow2 | sed 's/.*-//'))" --os-kind linux --exist-ok
	@echo "In LIMEN: Media → Files in the media directory → register debian-12-limen.qcow2 (Linux)."

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
