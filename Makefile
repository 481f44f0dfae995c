# netops.ip_transparency: every entry point. The README's two commands are `make demo` and
# `make test`; each sets up what it needs on a fresh Debian 12 machine (packages, docker engine,
# lab image, Python tooling) and is safe to run again.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON    ?= python3
VENV      := .venv
COMPAT    := .venv-compat
BENCH_VENV := .venv-bench
# the shared lab's lock (several users, one lab); `make bench` holds it only for its lab phase
LAB_LOCK  ?= /tmp/coord/lab.lock
METHOD    ?= ip_transparency
METHODS   := ip_transparency dsr_router_nat dsr_origin_nat
SCENARIOS ?= $(sort $(patsubst molecule/%/molecule.yml,%,$(wildcard molecule/*/molecule.yml)))
COLLECTION_LINK := .collections/ansible_collections/netops/ip_transparency
# `make collection` runs ansible-doc on each of these modules and on every filter the installed
# collection exports: ansible-doc -l lists every filter of every FilterModule, documented or not,
# and fails on one without documentation (its own plugins/filter/<name>.yml when a file has several).
MODULES   := ip_rule policy_route rp_filter tc_nat_filter transparency_info
BUILD     := .build
# ansible-test wants an ansible_collections/ layout and lists files with git when it finds a
# repository above it: the sanity copy lives outside this tree.
SANITY_DIR ?= /tmp/netops-ipt-sanity

export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PY_COLORS := 0
export ANSIBLE_NOCOLOR := 1

.PHONY: help host venv compat image lab lab-down demo test unit integration vm vm-kernel sanity lint \
        collection molecule clean bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

host: ## Debian packages and a running docker engine
	@bash lab/host-setup.sh

venv: $(VENV)/.installed $(COLLECTION_LINK) ## Python tooling in .venv (pinned)

$(VENV)/.installed: requirements.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.txt -c constraints.txt
	touch $@

$(COLLECTION_LINK):
	mkdir -p $(dir $@)
	ln -sfn ../../.. $@

compat: $(COMPAT)/.installed ## a second venv with Debian 12's pyroute2 (0.7.2), as on the hosts

$(COMPAT)/.installed: tests/requirements-compat.txt
	$(PYTHON) -m venv $(COMPAT)
	$(COMPAT)/bin/pip install -q --disable-pip-version-check -r tests/requirements-compat.txt
	touch $@

image: host ## the lab's host image, built locally with debootstrap
	@bash lab/image/build.sh

lab: venv image ## bring the lab up and provision its baseline
	ansible-playbook lab/up.yml
	ansible-playbook -i inventories/lab lab/provision.yml

lab-down: venv ## remove the lab
	ansible-playbook lab/down.yml

demo: lab ## apply METHOD's playbook to the lab and show what the upstreams saw
	ansible-playbook -i inventories/lab playbooks/$(METHOD).yml
	ansible-playbook -i inventories/lab lab/show.yml -e lab_method=$(METHOD)

test: unit integration vm collection sanity lint molecule ## every test
	@echo "make test: all suites passed"

unit: venv ## pytest unit tests
	pytest tests/unit

integration: venv compat vm-kernel ## modules against the real kernel in network namespaces (both pyroute2 versions)
	pytest tests/integration
	$(COMPAT)/bin/pytest tests/integration

vm-kernel: host ## fetch Debian's stock kernel and build the qemu harness's initramfs (cached in .cache/vm)
	bash tests/vm/setup.sh

vm: venv compat vm-kernel ## tc backend tests in a qemu VM booted with Debian's stock kernel (has act_nat), both pyroute2 versions
	tests/vm/run-in-vm -- $(CURDIR)/$(VENV)/bin/pytest -p no:cacheprovider -m needs_tc_nat tests/integration
	tests/vm/run-in-vm -- $(CURDIR)/$(COMPAT)/bin/pytest -p no:cacheprovider -m needs_tc_nat tests/integration

collection: venv ## build the collection and install the tarball; ansible-doc reads the installed copy
	rm -rf $(BUILD)/dist $(BUILD)/install
	ansible-galaxy collection build --force --output-path $(BUILD)/dist .
	ansible-galaxy collection install --force -p $(BUILD)/install $(BUILD)/dist/netops-ip_transparency-*.tar.gz
	for m in $(MODULES); do \
	  ANSIBLE_COLLECTIONS_PATH=$(BUILD)/install ansible-doc -t module netops.ip_transparency.$$m >/dev/null; done
	filters=$$(ANSIBLE_COLLECTIONS_PATH=$(BUILD)/install ansible-doc -t filter -l --json netops.ip_transparency | \
	  python3 -c 'import json, sys; print(" ".join(sorted(json.load(sys.stdin))))'); \
	  [ -n "$$filters" ] || { echo "collection: ansible-doc lists no filter" >&2; exit 1; }; \
	  for f in $$filters; do ANSIBLE_COLLECTIONS_PATH=$(BUILD)/install ansible-doc -t filter $$f >/dev/null; done; \
	  echo "collection: built, installed, ansible-doc reads every module and the $$(wc -w <<<"$$filters") filters"

sanity: venv ## ansible-test sanity on a copy of the tree in an ansible_collections layout
	@pipver=$$(sed -nE "s/^ +pip='([0-9.]+)',$$/\1/p" $(VENV)/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py | head -1); \
	  [ -n "$$pipver" ] || { echo "cannot find the pip version ansible-test bootstraps" >&2; exit 1; }; \
	  install -D -m 0644 tests/sanity/get_pip_offline.py $$HOME/.ansible/test/cache/get_pip_$${pipver//./_}.py
	rm -rf $(SANITY_DIR) && mkdir -p $(SANITY_DIR)/ansible_collections/netops/ip_transparency
	git ls-files -z --cached --others --exclude-standard | \
	  rsync -a --from0 --files-from=- . $(SANITY_DIR)/ansible_collections/netops/ip_transparency/
	cd $(SANITY_DIR)/ansible_collections/netops/ip_transparency && \
	  ansible-test sanity --python 3.11 --requirements --color no

lint: venv ## ansible-lint, production profile
	ansible-lint --profile production

# First the role's rendered nginx files against the image's real `nginx -t` (`make unit` skips that test when the
# image is not built yet, as on a fresh CI machine).
molecule: venv image ## every Molecule scenario, one after another
	NETOPS_REQUIRE_LAB_IMAGE=1 pytest -p no:cacheprovider tests/unit/roles/nginx_transparent_proxy/test_nginx_syntax.py
	for s in $(SCENARIOS); do molecule test -s $$s; done

# Not part of `make test`. About 12-15 minutes; bench/README.md says what is measured where.
bench: host venv image $(BENCH_VENV)/.installed ## benchmarks: JSON, report and plot under bench/results/<UTC time>/
	bash bench/setup.sh
	@run=bench/results/$$(date -u +%Y%m%dT%H%M%SZ); mkdir -p $$run; date +%s > $$run/started; \
	  ln -sfn $$(basename $$run) bench/results/latest; rc=0; \
	  $(BENCH_VENV)/bin/python bench/run.py host $$run || rc=1; \
	  mkdir -p $(dir $(LAB_LOCK)); \
	  flock $(LAB_LOCK) bash -c "$(MAKE) --no-print-directory lab > $$run/make-lab.log 2>&1 && \
	    $(BENCH_VENV)/bin/python bench/run.py lab $$run" || rc=1; \
	  $(BENCH_VENV)/bin/python bench/run.py report $$run || rc=1; \
	  exit $$rc

$(BENCH_VENV)/.installed: bench/requirements.txt bench/constraints.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q --disable-pip-version-check -r bench/requirements.txt -c bench/constraints.txt
	touch $@

clean: ## remove build output and caches (not the venvs)
	rm -rf $(BUILD) .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
