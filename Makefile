# make run   install what LIMEN needs and serve it on $LIMEN_BIND (127.0.0.1:8080)
# make test  install that plus the test tools, check the code (make check), and run every test tier
# make check the layers (import-linter), lint and format (ruff) and types (mypy)
# make demo-image  build the Debian 12 guest image and upload it into LIMEN's media library:
#                  create a VM from it at once
# make bench install that plus websockify, and run the benchmarks
VENV   := .venv
PYTHON ?= python3
LINTED := limen app.py gunicorn.conf.py


.PHONY: run test check host host-test bench guest-image demo-image

run: host $(VENV)/.run-deps
	$(VENV)/bin/gunicorn -c gunicorn.conf.py app:app

test: host-test check guest-image
	scripts/run-tests

check: $(VENV)/.test-deps
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/mypy

bench: host-test $(VENV)/.bench-deps
	$(VENV)/bin/python bench/table_poll.py
	$(VENV)/bin/python bench/console.py
	$(VENV)/bin/python bench/load.py
	$(VENV)/bin/python bench/guest_boot.py
	$(VENV)/bin/python bench/serial.py
	$(VENV)/bin/python bench/snapshot.py
	$(VENV)/bin/python bench/remote_console.py
	$(VENV)/bin/python bench/migration.py

host:
	scripts/host-setup

# The guest tier's image: about 1.5 minutes the first time, then cached by the script's hash.
guest-image: host-test
	scripts/build-guest-image >/dev/null

# The image streams into the media pool through libvirt, as an upload from the browser does;
# its name carries the build's hash, so a new build is a new medium and never replaces a base
# that VMs are built on.
demo-image: host $(VENV)/.run-deps
	image="$$(scripts/build-guest-image)" && \
	$(VENV)/bin/flask --app app media upload "$$image" --kind image --os-kind linux --exist-ok \
		--name "Debian 12 LIMEN demo ($$(basename "$$image" .qcow2 | sed 's/.*-//'))"

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
