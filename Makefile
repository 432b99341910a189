# xdpflowreceiver: build, test and run. Loading XDP programs needs root (or
# CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON); targets that do say so.
GO          ?= go
GOBIN       := $(shell command -v $(GO) >/dev/null 2>&1 && $(GO) env GOPATH)/bin
# The Go release go.mod requires (its "go" line); check-go names it.
GO_MIN      := $(word 2,$(filter go 1.%,$(file < go.mod)))
OCB_VERSION := v0.165.0
OCB         := $(GOBIN)/builder
DIST_DIR    := build/otelcol-xdpflow
COLLECTOR   := $(DIST_DIR)/otelcol-xdpflow
CONFIG      ?= examples/default.yaml
# A count, not a duration: Go 1.26's fuzzer can fail a duration-bounded run
# with "context deadline exceeded" at the deadline (go.dev/issue/75804).
# 300000 inputs take about 30 s here.
FUZZTIME    ?= 300000x

.PHONY: all generate test stress cross collector run e2e vmtest vmtest-all bench fuzz check-root check-go

all: test

## generate: rebuild the XDP programs and their Go bindings with bpf2go (needs clang, llvm, libbpf-dev):
## the datapath's, and the benchmark-only ones of internal/naivebench; then internal/metadata,
## documentation.md and the generated_*_test.go files from metadata.yaml with mdatagen
# clang -target bpf does not search the host's multiarch include directory,
# which holds <asm/types.h> (/usr/include/x86_64-linux-gnu,
# /usr/include/aarch64-linux-gnu, ...): bpf2go adds BPF2GO_CFLAGS to the
# flags of each //go:generate line.
generate: export BPF2GO_CFLAGS = -I/usr/include/$(shell clang -print-multiarch)
generate:
	cd internal/datapath && $(GO) generate ./...
	cd internal/naivebench && $(GO) generate ./...
	$(GO) generate .

## test: vet and run every test (as root, the BPF and network-namespace tests run too); needs
## only Go and a Linux kernel, no ip, ethtool or tcpdump
test: check-go
	$(GO) vet ./...
	$(GO) test -count=1 ./...

## stress: the long variants (as root): the verifier budget under every combination of the
## load-time options
stress: check-go
	XDPFLOW_STRESS=1 $(GO) test -count=1 -run 'TestVerifierBudget' -v ./internal/datapath/

## vmtest: run the kernel tier (vmtest/tier.sh) in a VM booted from Debian's kernel KERNEL
## (vmtest/kernels.sh: 6.1, 6.12, 5.10, 6.1-arm64; default 6.1), as root; needs qemu-system-x86
## (qemu-system-arm for arm64), busybox-static, cpio and xz-utils; kernels are fetched with apt
## and cached in ~/.cache/xdpflow-vmtest
KERNEL ?= 6.1
vmtest: collector
	COLLECTOR=$(abspath $(COLLECTOR)) bash vmtest/run.sh $(KERNEL)

## vmtest-all: the kernel tier on this machine's kernel and on every kernel of the matrix, then a
## table of the results (each kernel's output in build/vmtest/KERNEL.log)
vmtest-all: collector
	COLLECTOR=$(abspath $(COLLECTOR)) bash vmtest/matrix.sh

## cross: build and vet for every target a distribution may include; off Linux the factory
## registers and creating the receiver fails with "needs Linux 5.15+"
CROSS_TARGETS := linux/amd64 linux/arm64 darwin/arm64 windows/amd64
cross: check-go
	@set -e; for t in $(CROSS_TARGETS); do \
		echo "GOOS=$${t%/*} GOARCH=$${t#*/} go build ./... && go vet ./..."; \
		GOOS=$${t%/*} GOARCH=$${t#*/} $(GO) build ./...; \
		GOOS=$${t%/*} GOARCH=$${t#*/} $(GO) vet ./...; \
	done

$(OCB):
	$(GO) install go.opentelemetry.io/collector/cmd/builder@$(OCB_VERSION)

## collector: build the otelcol-xdpflow distribution with ocb into build/otelcol-xdpflow/
## (static, CGO_ENABLED=0: it runs anywhere, the VM kernel matrix's initramfs included)
collector: check-go $(OCB)
	mkdir -p $(DIST_DIR)
	CGO_ENABLED=0 $(OCB) --config builder-config.yaml

## run: build the collector and run it on lo, port 8080, printing metrics (debug exporter)
run: check-root collector
	$(COLLECTOR) --config $(CONFIG)

## e2e: build the collector, then run the end-to-end tests with it (as root; they need ip,
## tcpdump, prometheus and setcap), and validate the examples and deployment manifests with it
e2e: collector
	XDPFLOW_COLLECTOR=$(abspath $(COLLECTOR)) $(GO) test -count=1 -v -timeout 10m ./e2e/... ./examples/... ./deploy/...

## bench: run the benchmarks (as root; BENCHMARKS.md has the figures): the
## datapath's per-packet benchmarks (~2 minutes; each runs its own rounds,
## hence -benchtime=1x, and prints a table), then every other package's
BENCH_DATAPATH := PacketCost|MultiCore|VethThroughput|VethTransmit
bench:
	$(GO) test -run '^$$' -bench '$(BENCH_DATAPATH)' -benchtime=1x ./internal/datapath/
	$(GO) test -run '^$$' -bench . -benchmem $$($(GO) list ./... | grep -v '/internal/datapath$$')

## fuzz: fuzz the XDP program's parser against a Go reference parser, FUZZTIME inputs (as root)
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParser -fuzztime $(FUZZTIME) -fuzzminimizetime 2000x ./internal/datapath/

check-root:
	@if [ "$$(id -u)" != 0 ]; then \
		echo "xdpflow needs root to load and attach its XDP program: run 'sudo make run'."; \
		echo "Without root, build the collector and grant it CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON"; \
		echo "(all three are needed: loading an XDP program needs CAP_BPF and CAP_NET_ADMIN, the verifier"; \
		echo "accepts its packet parsing only with CAP_PERFMON; see docs/deploy.md):"; \
		echo "  make collector && sudo setcap cap_bpf,cap_net_admin,cap_perfmon+ep $(COLLECTOR) && $(COLLECTOR) --config $(CONFIG)"; \
		exit 1; \
	fi

# sudo resets PATH (secure_path), which hides a Go installed in /usr/local/go/bin.
check-go:
	@command -v $(GO) >/dev/null 2>&1 || { \
		echo "'$(GO)' is not in PATH ($$PATH): install Go $(GO_MIN) or newer (https://go.dev/dl/)."; \
		if [ -n "$$SUDO_USER" ]; then \
			echo "sudo replaced your PATH with its secure_path; keep yours with:"; \
			echo '  sudo env "PATH=$$PATH" make $(or $(MAKECMDGOALS),all)'; \
		fi; \
		exit 1; }
