# vagrant/vm.mk — the kernel matrix, included by the top Makefile.
#
#   make vm-test                      every row: bullseye bookworm bookworm-6.12 trixie host
#   make vm-test KERNELS=bookworm     one row (what CI runs)
#   make vm-images [KERNELS=...]      build or refresh the cached images only
#   make vm-journal-test              two VMs: journal forwarding to a collector
#   make vm-boxes [KERNELS=...]       Vagrant boxes of the Debian rows (vagrant/README.md)
#   make vagrant-test [KERNELS=...]   vagrant up -> provision -> check -> destroy (not for CI)
#   make ansible-lint                 ansible-lint, production profile
#
# Variables: KERNELS, VM_PACKAGE (default: newest dist/aarsm_*_amd64.deb),
# VM_JOBS, VM_SERVICE (stopped|started), VM_SCENARIO, VM_IDEMPOTENCE, VM_KEEP,
# AARSM_VM_CACHE (default ~/.cache/aarsm-vm), AARSM_VM_REBUILD=1,
# VM_TEST_DEPS (prerequisites of the VM targets, default: packages).

VM_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
VM_TEST_DEPS ?= packages

export KERNELS VM_PACKAGE VM_JOBS VM_SERVICE VM_SCENARIO VM_IDEMPOTENCE VM_KEEP
export AARSM_VM_CACHE AARSM_VM_REBUILD

.PHONY: vm-test vm-images vm-journal-test vm-boxes vagrant-test ansible-lint vm-clean

vm-test: $(VM_TEST_DEPS)
	$(VM_DIR)/vm-test.sh

vm-images:
	$(VM_DIR)/build-image.sh $(or $(KERNELS),bullseye bookworm bookworm-6.12 trixie)

vm-journal-test: $(VM_TEST_DEPS)
	$(VM_DIR)/journal-test.sh

vm-boxes:
	$(VM_DIR)/build-box.sh $(or $(KERNELS),bullseye bookworm bookworm-6.12 trixie)

vagrant-test: $(VM_TEST_DEPS)
	$(VM_DIR)/vagrant-test.sh $(or $(KERNELS),bookworm)

ansible-lint:
	cd $(VM_DIR)/../ansible && ansible-lint --profile production site.yml roles/aarsm

# Removes the cached images, boxes and key (the Vagrant boxes added to
# ~/.vagrant.d stay: `vagrant box remove aarsm/debian-ROW`).
vm-clean:
	rm -rf "$${AARSM_VM_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/aarsm-vm}"
