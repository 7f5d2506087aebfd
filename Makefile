# chatstack: `make demo` runs the stack in a local container, `make test` proves it.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3
export CONTAINERS_CONF := $(CURDIR)/containers.conf
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/$(BIN):$(PATH)

# Debian packages the controller needs; installed only when missing.
# gettext: `make messages` and the app's catalog tests (xgettext, msgmerge, msgfmt).
# fonts-wqy-microhei: Chinese glyphs for the browser tests' screenshots (boxes without).
# redis-sentinel: the app's failover test (app/tests/test_sentinel_failover.py) runs
# its own sentinels on free ports, so the package's service on 26379 is never used.
HOST_PACKAGES := podman runc debootstrap python3-venv redis-server uidmap chromium openssh-client \
                 gettext fonts-wqy-microhei redis-sentinel
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

DEMO := chatstack-demo
DEMO_IMAGE := localhost/chatstack-debian12

.PHONY: help root host-packages venv lock images images-rebuild demo demo-destroy \
        docs messages lint test-app test-wiring test-fast test-molecule test-e2e test-cluster test-ssh test bench clean

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'
	@printf '  %-16s %s\n' 'molecule-<name>' 'One Molecule scenario: $(SCENARIOS)'

host-packages: ## Install the Debian packages the controller needs
	@missing=$$(for p in $(HOST_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null \
	    | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "installing: $$missing"; \
	    $(SUDO) apt-get update -qq; \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(BIN)/.installed: requirements.lock | host-packages
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	touch $@

venv: $(BIN)/.installed ## Create .venv from requirements.lock

lock: ## Re-lock controller tools and the app's dependencies
	$(BIN)/uv pip compile app/pyproject.toml --universal --python-version 3.11 \
	    --generate-hashes --quiet -o app/requirements.lock
	$(BIN)/uv pip compile requirements.in --python-version 3.11 \
	    --generate-hashes --quiet -o requirements.lock

# Test hosts boot systemd, which needs rootful Podman.
root:
	@[ "$$(id -u)" = 0 ] || { echo "run this as root: test containers use rootful Podman" >&2; exit 1; }

images: | root host-packages ## Build the Debian 12 and 13 test images (skipped when present)
	molecule/images/build.sh bookworm localhost/chatstack-debian12
	molecule/images/build.sh trixie localhost/chatstack-debian13

images-rebuild: | root host-packages ## Rebuild the test images
	molecule/images/build.sh bookworm localhost/chatstack-debian12 --force
	molecule/images/build.sh trixie localhost/chatstack-debian13 --force

demo: root venv ## Provision a local Debian 12 container; chat on https://127.0.0.1:8443/
	molecule/images/build.sh bookworm $(DEMO_IMAGE)
	@# A container left by an older version lacks the firewall's capability: replace it.
	podman container inspect --format '{{.HostConfig.CapAdd}}' $(DEMO) 2>/dev/null \
	    | grep -q NET_ADMIN || podman rm --force --ignore $(DEMO)
	podman container exists $(DEMO) || podman create --name $(DEMO) --hostname $(DEMO) \
	    --systemd=always --cap-add NET_ADMIN -p 127.0.0.1:8080:80 -p 127.0.0.1:8443:443 $(DEMO_IMAGE)
	podman start $(DEMO) >/dev/null
	podman exec $(DEMO) systemctl is-system-running --wait >/dev/null || true
	$(BIN)/ansible-playbook -i inventory/demo playbooks/site.yml
	@echo; echo "chatstack is up: https://127.0.0.1:8443/ (self-signed certificate)"

demo-destroy: ## Remove the demo container
	podman rm --force --ignore $(DEMO)

docs: venv ## Write each role's README.md from its meta/argument_specs.yml
	for role in roles/*/; do $(BIN)/aar-doc --output-mode replace \
	    --output-template docs/aar-doc/README.md.j2 $$role markdown >/dev/null; done

# The compiled catalog is committed next to the .po: the wheel, `runserver` and the tests then
# need no build step, and test_catalog proves the .mo is the .po compiled (and complete).
messages: venv ## Re-extract the app's strings into its zh_Hans catalog, then compile it
	cd app/chatstack && ../../$(BIN)/python -m django makemessages --locale zh_Hans \
	    --no-obsolete --add-location file
	cd app/chatstack && ../../$(BIN)/python -m django compilemessages --locale zh_Hans

lint: venv docs ## yamllint, ansible-lint (production profile), ruff, role READMEs current
	@git diff --quiet -- 'roles/*/README.md' || { git diff --stat -- 'roles/*/README.md'; \
	    echo "role READMEs were out of date with argument_specs: commit the regenerated ones" >&2; exit 1; }
	$(BIN)/yamllint --strict .
	$(BIN)/ansible-lint --strict
	$(BIN)/ruff check . && cd app && ../$(BIN)/ruff check .
	$(BIN)/ruff format --check . && cd app && ../$(BIN)/ruff format --check .

test-app: venv ## The app's tests (against a real redis-server)
	cd app && ../$(BIN)/pytest -q

test-wiring: venv ## Wiring on fake inventories, role contracts, the collection installed: no host
	$(BIN)/pytest -q -p no:cacheprovider -p no:asyncio tests/wiring

test-fast: lint test-app test-wiring ## Lint, the app's and the wiring's tests: no containers

# Every scenario, longest first: MOLECULE_JOBS at a time finish close together.
# Each scenario's output is printed whole when it ends.
SCENARIOS := default cluster ha resilience ssh acme
MOLECULE_JOBS ?= 2
ifneq ($(sort $(SCENARIOS)),$(sort $(notdir $(patsubst %/,%,$(dir $(wildcard molecule/*/molecule.yml))))))
$(error SCENARIOS must list every molecule/*/molecule.yml)
endif

# Each scenario's whole output is also kept in build/molecule/<scenario>.log; the run ends
# with one line per scenario and the tests that failed, where a CI log's tail shows them.
# --keep-going: one scenario failing does not keep the others from being run and reported.
test-molecule: venv images ## Every Molecule scenario, MOLECULE_JOBS (2) at a time
	@status=0; $(MAKE) --no-print-directory -j$(MOLECULE_JOBS) --keep-going --output-sync=target \
	    $(SCENARIOS:%=molecule-%) || status=$$?; \
	echo "== summary"; for scenario in $(SCENARIOS); do \
	    tail -n 1 build/molecule/$$scenario.log 2>/dev/null || echo "== $$scenario did not start"; \
	    sed 's/\x1b\[[0-9;]*m//g' build/molecule/$$scenario.log 2>/dev/null \
	        | grep -E '^[^A-Za-z]*(FAILED|ERROR) [^ ]+::' | sed 's/^[^A-Z]*/    /' || true; \
	done; exit $$status

molecule-%: venv images
	@mkdir -p build/molecule
	@echo "== molecule scenario $* started $$(date -u +%T)" | tee build/molecule/$*.log
	@# Wide lines: at 80 columns Molecule wraps a failed test's name off its FAILED line.
	@COLUMNS=300 $(BIN)/molecule test -s $* 2>&1 | tee -a build/molecule/$*.log \
	    || { echo "== molecule scenario $* FAILED $$(date -u +%T)" | tee -a build/molecule/$*.log; exit 1; }
	@echo "== molecule scenario $* passed $$(date -u +%T)" | tee -a build/molecule/$*.log

test-e2e: molecule-resilience ## The destructive tests: faults, abusive clients, backup/restore

test-cluster: molecule-cluster ## Five hosts: lb, two app hosts, redis, db; rolling deploy

test-ssh: molecule-ssh ## A server reached over SSH on port 2222 as a sudo user

test: lint test-app test-wiring test-molecule ## Everything CI runs

# Extra options for bench/run.py, e.g. BENCH_ARGS="--quick" or "--only fanout,capacity".
BENCH_ARGS ?=

bench: root venv ## Benchmarks, tuned vs seed: a table and build/bench/<time>.json
	molecule/images/build.sh bookworm $(DEMO_IMAGE)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean: demo-destroy ## Remove the demo, .venv and build output
	rm -rf $(VENV) build
