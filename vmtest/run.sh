#!/usr/bin/env bash
# run.sh KERNEL: build the test binaries for KERNEL's architecture and run
# its tier of the kernel matrix (tier.sh) in a VM (vmtest.sh). `make vmtest
# KERNEL=...` calls it; COLLECTOR, when set, is a static collector to run
# end to end in the VM (amd64 only).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=kernels.sh
. "$here/kernels.sh"
kernel="${1:?usage: run.sh KERNEL (or host: the tier on the kernel of this machine, no VM)}"
line="$(kernel_entry "$kernel")"
read -r _ _ arch _ tier <<<"$line"

out="$(cd "$here/.." && pwd)/build/vmtest/$kernel"
rm -rf "$out" && mkdir -p "$out"
cd "$here/.."
echo "vmtest: building the test binaries for linux/$arch"
CGO_ENABLED=0 GOOS=linux GOARCH="$arch" go test -c -o "$out/datapath.test" ./internal/datapath
if [ "$tier" = full ]; then
	CGO_ENABLED=0 GOOS=linux GOARCH="$arch" go test -c -o "$out/e2e.test" ./e2e
	if [ -n "${COLLECTOR:-}" ]; then
		cp "$COLLECTOR" "$out/otelcol-xdpflow"
	fi
fi
cp "$here/tier.sh" "$out/"
if [ "$kernel" = host ]; then
	cd "$out"
	echo "vmtest: kernel $(uname -r), $(nproc) CPUs (this machine's, no VM)"
	exec env DATAPATH_RUN="${DATAPATH_RUN:-}" VMTEST_WORK="$out" XDPFLOW_EMULATED_CPUS= sh tier.sh "$tier"
fi
exec "$here/vmtest.sh" "$kernel" "$out" -- env DATAPATH_RUN="${DATAPATH_RUN:-}" sh tier.sh "$tier"
