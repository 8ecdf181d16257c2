# argoctl: `make test` does all set-up (once; stamps under build/stamps) then runs
# the host suites and the integration suite (natively or in a virtme-ng VM).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
STAMPS := build/stamps
PY := $(VENV)/bin/python

.PHONY: setup test test-host test-integration bench clean
.DEFAULT_GOAL := test

setup: $(STAMPS)/host $(STAMPS)/venv

$(STAMPS)/host: scripts/setup-host.sh
	scripts/setup-host.sh
	@mkdir -p $(STAMPS) && touch $@

# Re-run pip when the package metadata changes (new install_requires) or the
# compiled parts do (pip install -e . builds argoctl/_echo.c and _pathcore.c in place).
$(STAMPS)/venv: scripts/setup-venv.sh setup.cfg setup.py pyproject.toml argoctl/_echo.c argoctl/_pathcore.c argoctl/_pathcore.h $(STAMPS)/host
	PYTHON=$(PYTHON) VENV=$(VENV) scripts/setup-venv.sh
	@mkdir -p $(STAMPS) && touch $@

test: setup
	$(PY) scripts/run_tests.py

test-host: setup
	$(PY) scripts/run_tests.py --only host

test-integration: setup
	$(PY) scripts/run_tests.py --only integration

bench: setup
	$(PY) scripts/run_bench.py --out bench-results.json

# The lab demo: argoctl against a direct-only baseline under outage, brownout and
# (fleet mode, for that scenario only: nats-server, relay agents, GRE and WireGuard)
# an outage only one relay survives
# (re-runs itself in the distribution-kernel VM when this kernel lacks GRE/netem).
.PHONY: demo
demo: setup
	$(PY) -m argoctl demo

clean:
	rm -rf build/stamps build/test-results build/bench

# The Vagrant lab on real VMs (docs/vagrant.md). Not part of CI: under TCG on this
# shared 2-core machine the three VMs take 10-25 min just to boot.
# vagrant-box: a Debian 12 box for vagrant-libvirt from Debian's packages (cached
# in build/vagrant; delete build/vagrant/argoctl-bookworm.box to rebuild).
.PHONY: vagrant-box vagrant-lab
VAGRANT_OUT := build/vagrant
vagrant-box: setup
	ARGOCTL_SETUP_VAGRANT_LAB=1 scripts/setup-host.sh
	VAGRANT_HOME=$(CURDIR)/$(VAGRANT_OUT)/home scripts/vagrant-box.sh $(VAGRANT_OUT)

vagrant-lab: vagrant-box
	scripts/vagrant-lab.sh
