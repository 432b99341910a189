#!/usr/bin/env bash
# matrix.sh [KERNEL...]: run the kernel tier on every kernel of the matrix
# (or those named) and print a table of the results; the tier's output of
# each is in build/vmtest/KERNEL.log. The host's own kernel runs the same
# datapath tests natively (make test runs them all there). Exits non-zero
# if any kernel failed.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=kernels.sh
. "$here/kernels.sh"
cd "$here/.."
mkdir -p build/vmtest
kernels=("$@")
[ ${#kernels[@]} -gt 0 ] || read -r -a kernels <<<"host $(kernel_names)"

rows=()
failed=0
for k in "${kernels[@]}"; do
	log="build/vmtest/$k.log"
	start=$(date +%s)
	bash "$here/run.sh" "$k" >"$log" 2>&1
	rc=$?
	secs=$(($(date +%s) - start))
	release="$(sed -n 's/^vmtest: kernel \([^,]*\),.*/\1/p' "$log" | head -1)"
	summary="$(grep -E '^vmtest tier ' "$log" | tail -1 | sed 's/.*: //')"
	result=passed
	[ "$rc" -eq 0 ] || { result=FAILED; failed=$((failed + 1)); }
	read -r _ _ arch _ tier <<<"$(kernel_entry "$k")"
	rows+=("| $k | ${release:-?} | $arch | $tier | $result (${summary:-no summary}) | ${secs} s |")
	echo "vmtest: $k: $result in ${secs} s (log: $log)"
done

echo
echo "| kernel | release | arch | tier | result | time |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
[ "$failed" -eq 0 ]
