#!/usr/bin/env bash
# vmtest.sh: boot one of Debian's kernels in QEMU and run commands in it.
#
#   vmtest.sh KERNEL DIR -- COMMAND...
#
# KERNEL names a kernel of the matrix (kernels.sh lists them). DIR holds
# what the VM runs: it is copied into the initramfs as /work, and COMMAND
# runs there as root, with /proc, /sys, /sys/fs/bpf, /tmp and /run mounted,
# lo up and the kernel's veth, clsact and cls_bpf modules loaded. The
# script exits with COMMAND's status; the VM's console goes to stdout.
#
# Needs qemu-system-x86 (or qemu-system-arm for arm64), busybox-static
# (busybox-static:arm64 for arm64 kernels, fetched by kernels.sh), cpio
# and xz-utils. Uses KVM where /dev/kvm works, TCG elsewhere.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=kernels.sh
. "$here/kernels.sh"

[ $# -ge 3 ] && [ "$3" = "--" ] || { echo "usage: $0 KERNEL DIR -- COMMAND..." >&2; exit 2; }
kernel="$1" dir="$2"
shift 3

kernel_fetch "$kernel"  # sets KDIR, KARCH, KVERSION
: "${VMTEST_MEMORY:=3G}"
: "${VMTEST_CPUS:=2}"
: "${VMTEST_TIMEOUT:=3600}"

work="$(mktemp -d "${TMPDIR:-/tmp}/vmtest.XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root"/{bin,lib/modules,work,proc,sys,dev,tmp,run}

cp "$KDIR/busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
# busybox's ip has no `ip netns exec`, which the end-to-end tests run
# commands with: nsenter does the same (setns, then exec).
mkdir -p "$root/usr/local/bin"
cat >"$root/usr/local/bin/ip" <<'SHIM'
#!/bin/sh
if [ "$1" = netns ] && [ "$2" = exec ]; then
	ns="$3"
	shift 3
	exec nsenter "--net=/run/netns/$ns" "$@"
fi
exec busybox ip "$@"
SHIM
chmod +x "$root/usr/local/bin/ip"
modules_for "$KDIR" veth sch_ingress cls_bpf sch_netem >"$root/lib/modules/order"
while read -r m; do
	cp "$KDIR/modules/$m" "$root/lib/modules/$m"
done <"$root/lib/modules/order"
cp -a "$dir/." "$root/work/"

# The command, quoted for sh.
printf '%q ' "$@" >"$root/command"

cat >"$root/init" <<'EOF'
#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/usr/local/bin:/bin HOME=/tmp TMPDIR=/tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mount -t bpf bpf /sys/fs/bpf
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mkdir -p /run/netns /var && ln -s /run /var/run
while read -r m; do
	insmod "/lib/modules/$m" || echo "vmtest: insmod $m failed"
done </lib/modules/order
ip link set lo up
echo "vmtest: kernel $(cat /proc/sys/kernel/osrelease), $(grep -c ^processor /proc/cpuinfo) CPUs"
cd /work
sh -c "$(cat /command)"
echo "vmtest: exit status $?"
sync
poweroff -f
EOF
chmod +x "$root/init"

(cd "$root" && find . | cpio -o -H newc --quiet) >"$work/initrd"

case "$KARCH" in
amd64)
	qemu=(qemu-system-x86_64 -cpu max -kernel "$KDIR/vmlinuz")
	console=ttyS0
	;;
arm64)
	qemu=(qemu-system-aarch64 -M virt -cpu max -kernel "$KDIR/vmlinuz")
	console=ttyAMA0
	;;
esac
# An x86 guest gets one thread for every vCPU: with a thread each
# (MTTCG), 6.12 took an int3 oops in the BPF dispatcher that the kernel
# was patching on another vCPU. Race tests still interleave the vCPUs, at
# every time slice. An arm64 guest's vCPUs run in parallel.
accel=(-accel tcg)
[ "$KARCH" = amd64 ] && accel=(-accel tcg,thread=single)
if [ -w /dev/kvm ] && [ "$KARCH" = "$(host_arch)" ] && grep -qE 'vmx|svm' /proc/cpuinfo; then
	accel=(-accel kvm -accel tcg)
fi

echo "vmtest: booting $KVERSION ($KARCH, ${accel[*]})"
log="$work/console"
status=0
timeout --foreground -k 10 "$VMTEST_TIMEOUT" "${qemu[@]}" "${accel[@]}" \
	-m "$VMTEST_MEMORY" -smp "$VMTEST_CPUS" -initrd "$work/initrd" \
	-append "console=$console panic=-1 oops=panic quiet mitigations=off rdinit=/init" \
	-display none -monitor none -serial stdio -no-reboot -nic none </dev/null |
	tee "$log" || status=$?
if [ "$status" -ne 0 ]; then
	echo "vmtest: QEMU failed or timed out after ${VMTEST_TIMEOUT}s (status $status)" >&2
	exit 1
fi
rc="$(sed -n 's/^vmtest: exit status \([0-9]*\).*/\1/p' "$log" | tail -1)"
if [ -z "$rc" ]; then
	echo "vmtest: the VM stopped before the command ended (kernel panic or out of memory?)" >&2
	exit 1
fi
exit "$rc"
