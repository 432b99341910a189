#!/bin/sh
# build.sh OUTDIR [NAME...]: builds benchmark-only variants of the XDP
# program, each bpf/xdpflow.c without one part of its hit path, to measure
# what that part costs (BENCHMARKS.md, "The hit path against the same-key
# floor"). Never load one in production: each gives up a guarantee.
#
# NAME.patch (all of them by default) starts with "base: REV", the revision
# whose bpf/xdpflow.c and headers/xdpflow.h it applies to: lock-* to the
# program that took the entry's spin lock on every hit, pin-* to the one
# that pins the entry instead. Each variant is compiled as bpf2go compiles
# the program (`make generate`) into OUTDIR/NAME.o, which BenchmarkPacketCost
# loads with -xdpflow.compare=OUTDIR/NAME.o,... (comma-separated); the
# unpatched program of REV is `git show REV:internal/datapath/xdpflow_bpfel.o`.
# Needs clang, llvm-strip, patch, and the repository's history.
set -eu
[ $# -ge 1 ] || { echo "usage: $0 OUTDIR [NAME...]" >&2; exit 2; }
out=$(cd "$1" && pwd)
shift
dir=$(cd "$(dirname "$0")" && pwd)
cd "$dir"
names=$*
[ -n "$names" ] || names=$(ls ./*.patch | sed 's|^\./||; s|\.patch$||')
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
multiarch=$(clang -print-multiarch)
for name in $names; do
	base=$(sed -n '1s/^base: //p' "$name.patch")
	[ -n "$base" ] || { echo "$name.patch: no \"base: REV\" first line" >&2; exit 1; }
	mkdir -p "$tmp/$name/bpf" "$tmp/$name/headers"
	git show "$base:bpf/xdpflow.c" >"$tmp/$name/bpf/xdpflow.c"
	git show "$base:headers/xdpflow.h" >"$tmp/$name/headers/xdpflow.h"
	patch -s -d "$tmp/$name" -p1 <"$name.patch"
	# bpf2go's flags (internal/datapath/generate.go); unused functions are
	# expected, the variants leave parts out.
	clang -O2 -mcpu=v1 -I"$tmp/$name/headers" -I"/usr/include/$multiarch" -mcpu=v3 -Wall -Werror \
		-Wno-unused-function -target bpfel -c "$tmp/$name/bpf/xdpflow.c" -o "$out/$name.o" -fno-ident -g
	llvm-strip -g "$out/$name.o"
	echo "$out/$name.o"
done
