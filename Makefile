# xdpflowreceiver: build, test and run. Loading XDP programs needs root (or
# CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON); targets that do say so.
GO          ?= go
GOBIN       := $(shell $(GO) env GOPATH)/bin
OCB_VERSION := v0.165.0
OCB         := $(GOBIN)/builder
DIST_DIR    := build/otelcol-xdpflow
COLLECTOR   := $(DIST_DIR)/otelcol-xdpflow
CONFIG      ?= examples/default.yaml

.PHONY: all generate test collector run bench check-root

all: test

## generate: rebuild the XDP programs and their Go bindings with bpf2go (needs clang, llvm, libbpf-dev):
## the datapath's, and the benchmark-only ones of internal/naivebench
generate:
	cd internal/datapath && $(GO) generate ./...
	cd internal/naivebench && $(GO) generate ./...

## test: vet and run every test (as root, the BPF and network-namespace tests run too)
test:
	$(GO) vet ./...
	$(GO) test -count=1 ./...

$(OCB):
	$(GO) install go.opentelemetry.io/collector/cmd/builder@$(OCB_VERSION)

## collector: build the otelcol-xdpflow distribution with ocb into build/otelcol-xdpflow/
collector: $(OCB)
	mkdir -p $(DIST_DIR)
	$(OCB) --config builder-config.yaml

## run: build the collector and run it on lo, port 8080, printing metrics (debug exporter)
run: check-root collector
	$(COLLECTOR) --config $(CONFIG)

## bench: run the benchmarks (as root)
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

check-root:
	@if [ "$$(id -u)" != 0 ]; then \
		echo "xdpflow needs root to load and attach its XDP program: run 'sudo make run'."; \
		echo "Without root, grant the collector CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON:"; \
		echo "  sudo setcap cap_bpf,cap_net_admin,cap_perfmon+ep $(COLLECTOR) && $(COLLECTOR) --config $(CONFIG)"; \
		exit 1; \
	fi
