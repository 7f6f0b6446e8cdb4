# AARSM — build, generate, test. Run the test targets as root: they load
# eBPF programs into the running kernel and drive real TLS clients.

# go from PATH, else where the Debian machine images keep it.
GO        ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
GOFLAGS   := -trimpath
BIN       := bin/aarsm
PKGS      := ./...
FUZZTIME  ?= 60s

PREFIX    ?= /usr/local
DESTDIR   ?=

.PHONY: install all build generate check-generate test test-go test-short test-vm evasion fuzz fuzz-short soak bench vet lint clean

all: build

build: $(BIN)

$(BIN): $(shell find agent bpf hcl -name '*.go' -o -name '*.o' -o -name '*.hcl' 2>/dev/null) go.mod go.sum
	CGO_ENABLED=0 $(GO) build $(GOFLAGS) -ldflags '$(LDFLAGS)' -o $@ ./agent/cmd/aarsm

# Rebuild the eBPF objects and their Go bindings (needs clang, llvm-strip
# and libbpf headers: apt-get install clang llvm libbpf-dev).
generate:
	$(GO) generate ./bpf/...

# Fails when the committed objects or bindings differ from what the sources
# generate: CI runs it so that nobody commits C without its object.
check-generate: generate
	@git diff --exit-code --stat -- bpf/ || { echo "bpf/: generated files differ from the committed ones; run 'make generate' and commit" >&2; exit 1; }
	@test -z "$$(git status --porcelain -- bpf/)" || { git status --porcelain -- bpf/; echo "bpf/: untracked generated files" >&2; exit 1; }

vet:
	@test -z "$$(gofmt -l agent bpf hcl $(wildcard packaging vagrant))" || { gofmt -l agent bpf hcl; echo "gofmt: files above need formatting" >&2; exit 1; }
	$(GO) vet $(PKGS)

# golangci-lint with the linters of .golangci.yml, at a pinned version.
# `go run pkg@version` fetches it through the module proxy (checked against
# the checksum database) and builds it into the Go build cache, outside
# go.mod. Measured on the 2-CPU VM: with empty module and build caches
# ~4 min to fetch and build it (12.5 min while other tests loaded the
# machine); a run with an empty lint cache ~45 s, with warm caches ~5 s.
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT         := $(GO) run github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

lint:
	$(GOLANGCI_LINT) run ./...

# Everything CI checks, as root.
test: check-generate vet lint test-go evasion fuzz-short test-vm

# One row of the kernel matrix (vagrant/README.md): the package rolled out by
# the Ansible role into a Debian 12 VM (kernel 6.1, qemu without KVM), then
# the postmark scenario against the running aarsm.service. Needs qemu,
# mmdebstrap, ansible and Debian's mirror (~5 min cold, ~3.5 min with the
# image cached). SKIP_VM_TEST=1 skips it.
SKIP_VM_TEST ?=
test-vm:
ifeq ($(SKIP_VM_TEST),1)
	@echo "test-vm: skipped (SKIP_VM_TEST=1)"
else
	@$(MAKE) --no-print-directory vm-test KERNELS=bookworm VM_JOBS=1
endif

# One package at a time: each loads sensors into the one kernel, and a
# test that counts what its sensor saw should not share the machine's two
# CPUs with another package's containers and VMs.
test-go:
	@[ "$$(id -u)" = 0 ] || { echo "make test must run as root (it loads eBPF programs)" >&2; exit 1; }
	$(GO) test -count=1 -p 1 -timeout 30m $(PKGS)

# The pure tests only (parsers, policy decoding, the judge, formatting...),
# as any user: under -short every test that needs root, the kernel's eBPF
# or a real client skips itself, saying why. Not what CI runs (make test).
test-short:
	$(GO) test -short -count=1 $(PKGS)

# The evasion suite's table: each way of writing the backdoored mail,
# blocked or not, its benign twin delivered or not, and how many bytes of
# it reached the fake API (test-go runs the same test; this prints it).
evasion:
	@[ "$$(id -u)" = 0 ] || { echo "make evasion must run as root (it loads eBPF programs)" >&2; exit 1; }
	@out=$$(mktemp); $(GO) test -count=1 -run '^TestEvasions$$' -v ./agent/internal/enforce/ > $$out 2>&1; rc=$$?; \
		sed -n '/technique/,/^\s*$$/p' $$out; [ $$rc = 0 ] || cat $$out; rm -f $$out; exit $$rc

# Every fuzz target for a few seconds (make fuzz runs them longer).
FUZZ_TARGETS := \
	./agent/internal/parse:FuzzHTTPParser \
	./agent/internal/parse:FuzzHTTP2Parser \
	./agent/internal/parse:FuzzDecodeBody \
	./agent/internal/parse:FuzzWebSocket \
	./agent/internal/parse/mail:FuzzRelaxJSON \
	./agent/internal/parse/mail:FuzzJSONPrefix \
	./agent/internal/parse/mail:FuzzParseAddressList \
	./agent/internal/parse/mail:FuzzParseRFC822 \
	./agent/internal/parse/mail:FuzzSMTPSession \
	./agent/internal/parse/mail:FuzzFromHTTP \
	./agent/internal/parse/mail:FuzzParseJSON \
	./agent/internal/policy:FuzzParseSource \
	./agent/internal/judge/detect:FuzzScan \
	./agent/internal/judge/detect:FuzzSensitiveAttachment \
	./agent/internal/mcp:FuzzStdio \
	./agent/internal/mcp:FuzzSSE \
	./agent/internal/mcp:FuzzRecipients \
	./agent/internal/baseline:FuzzBaselineFile \
	./agent/internal/gosym:FuzzGoTables \
	./agent/internal/parse/mail:FuzzMultipart \
	./agent/internal/policy:FuzzPolicyDir \
	./agent/internal/mcp:FuzzParseResponse \
	./agent/internal/mcp:FuzzHTTPConn \
	./agent/internal/probe:FuzzExamineELF \
	./agent/internal/probe:FuzzEventDecode \
	./agent/internal/stream:FuzzAssembler \
	./agent/internal/act:FuzzQuarantineState \
	./agent/internal/act/vault:FuzzVaultEntry \
	./agent/internal/journal:FuzzVerdictFields \
	./agent/internal/pkgid:FuzzCommandLine

fuzz-short:
	@$(MAKE) --no-print-directory fuzz FUZZTIME=3s

# One table at the end: executions, new interesting inputs, coverage bits
# and crashers per target (.ci/fuzz). A crasher is written under the
# package's testdata/fuzz/<Target>/: commit it with the fix.
fuzz:
	@GO=$(GO) FUZZTIME=$(FUZZTIME) .ci/fuzz $(FUZZ_TARGETS)

# The soak (agent/cmd/aarsm/soak_test.go), as root, loopback only: an
# enforcing agent under SOAK_REQUESTS keep-alive mails from curl, python and
# node (SOAK_VIOLATING per thousand with an external Bcc), then SOAK_CONNS
# short-lived connections and SOAK_PROCS short-lived processes; prints the
# report (verdicts, events lost, state, agent RSS and CPU). SOAK_TIME
# bounds each phase. Not part of make test.
SOAK_REQUESTS ?= 1000000
SOAK_CONNS    ?= 1000000
SOAK_PROCS    ?= 100000
SOAK_TIME     ?= 2h
soak:
	@[ "$$(id -u)" = 0 ] || { echo "make soak must run as root (it loads eBPF programs)" >&2; exit 1; }
	SOAK=1 SOAK_REQUESTS=$(SOAK_REQUESTS) SOAK_CONNS=$(SOAK_CONNS) SOAK_PROCS=$(SOAK_PROCS) SOAK_TIME=$(SOAK_TIME) \
		$(GO) test -count=1 -run '^TestSoak$$' -v -timeout 8h ./agent/cmd/aarsm/

bench:
	$(GO) test -run='^$$' -bench=. -benchmem $(PKGS)

# Installs the binary and, unless one is there already, the default policy
# (an edited policy is never overwritten).
install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/aarsm
	install -d -m 0755 $(DESTDIR)/etc/aarsm/policy.d
	test -e $(DESTDIR)/etc/aarsm/policy.d/default.hcl || install -m 0644 hcl/policies/default.hcl $(DESTDIR)/etc/aarsm/policy.d/default.hcl
	install -D -m 0644 systemd/aarsm.catalog $(DESTDIR)/usr/lib/systemd/catalog/aarsm.catalog

clean:
	rm -rf bin dist

-include packaging/packaging.mk
-include vagrant/vm.mk
