# netops.ip_transparency: every entry point. The README's two commands are `make demo` and
# `make test`; each sets up what it needs on a fresh Debian 12 machine (packages, docker engine,
# lab image, Python tooling) and is safe to run again.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON    ?= python3
VENV      := .venv
COMPAT    := .venv-compat
# the oldest ansible-core meta/runtime.yml claims (2.15), for `make sanity`; .venv has the newest that
# runs on Debian 12's Python 3.11 (2.19: 2.20 needs Python 3.12)
OLDEST    := .venv-oldest
BENCH_VENV := .venv-bench
RELEASE   := .venv-release
# the shared lab's lock (several users, one lab); `make bench` holds it only for its lab phase
LAB_LOCK  ?= /tmp/coord/lab.lock
METHOD    ?= ip_transparency
METHODS   := ip_transparency dsr_router_nat dsr_origin_nat
SCENARIOS ?= $(sort $(patsubst molecule/%/molecule.yml,%,$(wildcard molecule/*/molecule.yml)))
COLLECTION_LINK := .collections/ansible_collections/netops/ip_transparency
# `make collection` runs ansible-doc on each of these modules and on every filter the installed
# collection exports: ansible-doc -l lists every filter of every FilterModule, documented or not,
# and fails on one without documentation (its own plugins/filter/<name>.yml when a file has several).
MODULES   := ip_rule policy_route prerequisites_info rp_filter tc_nat_filter transparency_info
BUILD     := .build
# ansible-test wants an ansible_collections/ layout and lists files with git when it finds a
# repository above it: the sanity copy lives outside this tree.
SANITY_DIR ?= /tmp/netops-ipt-sanity
# What the built tarball may hold: shell patterns on its `tar tzf` entries, checked by `make
# collection`. Anything else (the lab, Molecule, tests, dev tooling) is the tree leaking into the
# collection: leave it out with galaxy.yml's build_ignore.
TARBALL_ALLOW := MANIFEST.json FILES.json README.md LICENSE CHANGELOG.md CHANGELOG.rst \
                 'plugins/*' 'roles/*' 'playbooks/*' 'meta/*' 'docs/*' inventories/ 'inventories/example/*' \
                 changelogs/ changelogs/changelog.yaml changelogs/config.yaml
TARBALL_DENY  := 'docs/internal/*' '*/__pycache__/*' '*.pyc'
SANITY_COPY := $(SANITY_DIR)/ansible_collections/netops/ip_transparency

export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PY_COLORS := 0
export ANSIBLE_NOCOLOR := 1

.PHONY: help host venv compat image lab lab-down demo test unit integration integration-newest integration-compat \
        vm vm-newest vm-compat vm-kernel sanity lint collection release-check molecule clean bench lab-ha

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

host: ## Debian packages and a running docker engine
	@bash lab/host-setup.sh

venv: $(VENV)/.installed $(COLLECTION_LINK) ## Python tooling in .venv (pinned)

$(VENV)/.installed: requirements-dev.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	touch $@

$(COLLECTION_LINK):
	mkdir -p $(dir $@)
	ln -sfn ../../.. $@

compat: $(COMPAT)/.installed ## a second venv with Debian 12's pyroute2 (0.7.2), as on the hosts

$(COMPAT)/.installed: tests/requirements-compat.txt
	$(PYTHON) -m venv $(COMPAT)
	$(COMPAT)/bin/pip install -q --disable-pip-version-check -r tests/requirements-compat.txt
	touch $@

$(OLDEST)/.installed: tests/requirements-oldest.txt tests/constraints-oldest.txt
	$(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/pip install -q --disable-pip-version-check -r tests/requirements-oldest.txt -c tests/constraints-oldest.txt
	touch $@

image: host ## the lab's host image, built locally with debootstrap
	@bash lab/image/build.sh

lab: venv image ## bring the lab up and provision its baseline
	ansible-playbook lab/up.yml
	ansible-playbook -i inventories/lab lab/provision.yml

lab-ha: venv image ## the lab with a keepalived pair of proxies (proxy1, proxy2) in place of the single one: inventories/lab-ha
	LAB_VARIANT=ha ansible-playbook lab/up.yml
	ansible-playbook -i inventories/lab-ha lab/provision.yml

lab-down: venv ## remove the lab (either variant)
	ansible-playbook lab/down.yml

demo: lab ## apply METHOD's playbook to the lab and show what the upstreams saw
	ansible-playbook -i inventories/lab playbooks/$(METHOD).yml
	ansible-playbook -i inventories/lab lab/show.yml -e lab_method=$(METHOD)

# The suites that leave the lab alone run two at a time (this machine has two cores; output grouped per suite), with
# the lab's image built beside them (mostly downloads), then Molecule alone: its load, failover and health checks
# measure time and losses.
test: ## every test
	$(MAKE) -j2 --output-sync=target unit integration vm collection release-check sanity lint docs image
	$(MAKE) molecule
	@echo "make test: all suites passed"

unit: venv ## pytest unit tests
	pytest tests/unit

# Each half is a target of its own, so that `make -j2` runs them side by side with the other suites.
integration: integration-newest integration-compat ## modules against the real kernel in network namespaces (both pyroute2 versions)

integration-newest: venv vm-kernel
	pytest tests/integration

# Debian 12's pyroute2 runs every module test; of the tests that run a role or a playbook (marker `playbook`, minutes
# of ansible-playbook each, driving the same modules), the ones marked `compat` only.
integration-compat: venv compat vm-kernel
	$(COMPAT)/bin/pytest -m "not playbook or compat" tests/integration

vm-kernel: host ## fetch Debian's stock kernel and build the qemu harness's initramfs (cached in .cache/vm)
	bash tests/vm/setup.sh

vm: vm-newest vm-compat ## tc backend tests in a qemu VM booted with Debian's stock kernel (has act_nat), both pyroute2 versions

vm-newest: venv vm-kernel
	tests/vm/run-in-vm -- $(CURDIR)/$(VENV)/bin/pytest -p no:cacheprovider -m needs_tc_nat tests/integration

vm-compat: venv compat vm-kernel
	tests/vm/run-in-vm -- $(CURDIR)/$(COMPAT)/bin/pytest -p no:cacheprovider -m needs_tc_nat tests/integration

collection: venv ## build the collection and install the tarball; ansible-doc reads the installed copy
	rm -rf $(BUILD)/dist $(BUILD)/install
	ansible-galaxy collection build --force --output-path $(BUILD)/dist .
	@offenders=$$(tar tzf $(BUILD)/dist/netops-ip_transparency-*.tar.gz | while read -r e; do ok=; \
	    for p in $(TARBALL_ALLOW); do [[ $$e == $$p ]] && ok=1; done; \
	    for p in $(TARBALL_DENY); do [[ $$e == $$p ]] && ok=; done; \
	    [ -n "$$ok" ] || echo "$$e"; done); \
	  [ -z "$$offenders" ] || { echo "collection: the tarball holds $$(wc -l <<<"$$offenders") entries outside" \
	    "TARBALL_ALLOW (add them to galaxy.yml's build_ignore):" >&2; sed 's/^/  /' <<<"$$offenders" >&2; exit 1; }
	ansible-galaxy collection install --force -p $(BUILD)/install $(BUILD)/dist/netops-ip_transparency-*.tar.gz
	for m in $(MODULES); do \
	  ANSIBLE_COLLECTIONS_PATH=$(BUILD)/install ansible-doc -t module netops.ip_transparency.$$m >/dev/null; done
	filters=$$(ANSIBLE_COLLECTIONS_PATH=$(BUILD)/install ansible-doc -t filter -l --json netops.ip_transparency | \
	  python3 -c 'import json, sys; print(" ".join(sorted(json.load(sys.stdin))))'); \
	  [ -n "$$filters" ] || { echo "collection: ansible-doc lists no filter" >&2; exit 1; }; \
	  for f in $$filters; do ANSIBLE_COLLECTIONS_PATH=$(BUILD)/install ansible-doc -t filter $$f >/dev/null; done; \
	  echo "collection: built, installed, ansible-doc reads every module and the $$(wc -w <<<"$$filters") filters"

# The tarball as an execution-environment builder and Galaxy see it, with their own tools in
# .venv-release (no pyroute2, no developer tooling): ansible-builder introspect lists nothing the
# controller does not need; the controller-side plugins load and run there; Galaxy's importer
# (ansible-doc, ansible-lint, flake8, changelog and metadata checks; not ansible-test, which it runs
# in a container from a registry) reports no error and no warning.
release-check: collection $(RELEASE)/.installed ## ansible-builder introspect and Galaxy's importer on the built tarball
	rm -rf $(BUILD)/release && mkdir -p $(BUILD)/release
	ANSIBLE_COLLECTIONS_PATH=$(BUILD)/install ansible-doc --json -t module \
	  $(addprefix netops.ip_transparency.,$(MODULES)) > $(BUILD)/release/module-docs.json
	$(RELEASE)/bin/ansible-builder introspect --sanitize $(BUILD)/install | tee $(BUILD)/release/introspect.yml | \
	  $(RELEASE)/bin/python tests/release/check_introspect.py requirements-dev.txt $(BUILD)/release/module-docs.json || \
	  { cat $(BUILD)/release/introspect.yml; exit 1; }
	! $(RELEASE)/bin/python -c 'import pyroute2' 2>/dev/null
	err=$$(ANSIBLE_COLLECTIONS_PATH=$(BUILD)/install $(RELEASE)/bin/ansible-doc -t filter -l netops.ip_transparency 2>&1 >/dev/null); \
	  [ -z "$$err" ] || { echo "release-check: ansible-doc, without pyroute2: $$err" >&2; exit 1; }
	ANSIBLE_COLLECTIONS_PATH=$(BUILD)/install $(RELEASE)/bin/ansible localhost -i localhost, -c local -m ansible.builtin.assert \
	  -a "that=\"'192.0.2.7' | netops.ip_transparency.in_networks(['192.0.2.0/24']) and not \
	      '192.0.2.7' | netops.ip_transparency.in_networks(['198.51.100.0/24'])\" quiet=true"
	@echo "release-check: the installed filters load and run on a controller without pyroute2"
	@# the importer in a HOME of its own and without this tree's ansible.cfg: ansible-lint must resolve the collection's
	@# modules from the tarball it imports, not from a copy another tool left in ~/.ansible/collections
	cd $(BUILD)/release && mkdir -p home && env -u ANSIBLE_CONFIG HOME=$(CURDIR)/$(BUILD)/release/home \
	  PATH=$(CURDIR)/$(RELEASE)/bin:$$PATH GALAXY_IMPORTER_CONFIG=$(CURDIR)/tests/release/galaxy-importer.cfg \
	  $(CURDIR)/$(RELEASE)/bin/python -m galaxy_importer.main $(CURDIR)/$(BUILD)/dist/netops-ip_transparency-*.tar.gz \
	  > importer.log 2>&1 || { cat importer.log; exit 1; }
	@grep -E '^(WARNING|ERROR|CRITICAL)' $(BUILD)/release/importer.log && \
	  { echo "release-check: galaxy-importer reported the above (full log: $(BUILD)/release/importer.log)" >&2; exit 1; }; \
	  grep -q '^Importer processing completed successfully' $(BUILD)/release/importer.log || \
	  { cat $(BUILD)/release/importer.log; exit 1; }; \
	  echo "release-check: galaxy-importer: no error, no warning ($$(grep -c . $(BUILD)/release/importer.log) log lines)"

$(RELEASE)/.installed: tests/requirements-release.txt tests/constraints-release.txt
	$(PYTHON) -m venv $(RELEASE)
	$(RELEASE)/bin/pip install -q --disable-pip-version-check -r tests/requirements-release.txt -c tests/constraints-release.txt
	touch $@

# Sanity on both ends of the supported range: ansible-test of the oldest ansible-core (.venv-oldest)
# and of the newest (.venv), each on the same copy; both run even if the first fails. Before them:
# shellcheck on the shell scripts that have no .sh (ansible-test checks only *.sh), and vermin: the
# modules run on the managed hosts' Python, which tests/config.yml says may be as old as its floor.
sanity: host venv $(OLDEST)/.installed ## ansible-test sanity with the oldest and the newest supported ansible-core, shellcheck included
	@command -v shellcheck >/dev/null || { echo "sanity: shellcheck missing (lab/host-setup.sh installs it)" >&2; exit 1; }
	shellcheck $$(git ls-files -- ':!:*.sh' | xargs awk 'FNR == 1 && /^#!.*[\/ ](ba)?sh$$/ {print FILENAME} {nextfile}')
	@floor=$$(sed -nE 's/^ +python_requires: *"?>=([0-9.]+)"?$$/\1/p' tests/config.yml); \
	  [ -n "$$floor" ] || { echo "sanity: no python_requires floor in tests/config.yml" >&2; exit 1; }; \
	  echo "vermin: modules and module_utils need no Python newer than $$floor"; \
	  $(OLDEST)/bin/vermin -q --no-tips --violations -t=$$floor- plugins/modules plugins/module_utils
	rm -rf $(SANITY_DIR) && mkdir -p $(SANITY_COPY)
	git ls-files -z --cached --others --exclude-standard | rsync -a --from0 --files-from=- . $(SANITY_COPY)/
	@rc=0; for v in $(OLDEST) $(VENV); do \
	  pipver=$$(sed -nE "s/^ +pip='([0-9.]+)',$$/\1/p" $$v/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py | head -1); \
	  [ -n "$$pipver" ] || { echo "cannot find the pip version $$v's ansible-test bootstraps" >&2; exit 1; }; \
	  install -D -m 0644 tests/sanity/get_pip_offline.py $$HOME/.ansible/test/cache/get_pip_$${pipver//./_}.py; \
	  echo "== sanity: $$($$v/bin/ansible-test --version)"; \
	  (cd $(SANITY_COPY) && PATH=$(CURDIR)/$$v/bin:$$PATH ansible-test sanity --python 3.11 --requirements --color no) || rc=1; \
	done; exit $$rc

lint: venv ## ansible-lint, production profile
	ansible-lint --profile production

# The changelog and the docs site (tests/docs/check.sh says what is checked); the site lands in .build/docs.
DOCS_VENV := .venv-docs
.PHONY: docs
docs: $(DOCS_VENV)/.installed $(COLLECTION_LINK) ## antsibull-changelog and antsibull-docs lint, the docs site with a page per module, role, filter
	PATH=$(CURDIR)/$(DOCS_VENV)/bin:$$PATH DOCS_DIR=$(BUILD)/docs bash tests/docs/check.sh

$(DOCS_VENV)/.installed: tests/requirements-docs.txt
	$(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/pip install -q --disable-pip-version-check -r tests/requirements-docs.txt
	touch $@

# First the role's rendered nginx files against the image's real `nginx -t` (`make unit` skips that test when the
# image is not built yet, as on a fresh CI machine).
molecule: venv image ## every Molecule scenario, one after another
	NETOPS_REQUIRE_LAB_IMAGE=1 pytest -p no:cacheprovider tests/unit/roles/nginx_transparent_proxy/test_nginx_syntax.py
	for s in $(SCENARIOS); do start=$$(date +%s); molecule test -s $$s; echo "molecule scenario $$s: $$(( $$(date +%s) - start )) s"; done

# Not part of `make test`. About 30 minutes; bench/README.md says what is measured where.
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
