#!/bin/sh
# tier.sh TIER: the kernel tier, run inside the VM by run.sh (busybox sh).
#
#   full   the datapath tests that depend on the kernel (frames through
#          prog.Run, the verifier budget, a veth attach both ways, a restart
#          on a state directory, the race tests) and, where the collector
#          was built for the VM, the collector end to end
#   small  for arm64 under emulation, where a load takes ~20 s: the verifier
#          budget at two settings, frames of each kind, a veth attach and
#          the race tests
#   floor  the refusal of a kernel below the floor, and nothing else
#
# DATAPATH_RUN, when set, replaces the datapath tests' -test.run pattern.
tier="${1:-full}"

small='TestKernelFloor|TestVerifierBudget|TestLayoutMatchesBTF|TestIntegrationTraffic|TestReadDirtyRacingPackets|TestEvictRacingPackets|TestConcurrentRuns'
full="$small"'|TestRunFrames$|TestRunSameFlowAccumulates|TestEgressFrames|TestEgressGSO|TestRunTruncatedFrames|TestIntegrationEgress$|TestIntegrationLengthChecksAgreeWithTheStack|TestStateKeepsCountingBetweenProcesses|TestReadDirtyListsChangedEntries|TestReadFlowsWalk|TestEvict$|TestTriggerEveryN|TestOverflow'
# The small tier runs frames of each family and transport through
# prog.Run, and the verifier budget at the two ends of the options (-short).
small_frames='TestRunFrames$/^(ipv4_tcp|ipv4_udp|ipv6_tcp|ipv6_udp|vlan_ipv4_tcp|ipv6_hop-by-hop_\+_dstopts_udp|ipv4_non-first_fragment)$'
short=
case "$tier" in
full) run="$full" ;;
small) run="$small" short=-test.short ;;
floor) run='TestKernelFloor|TestCheckFeatures' ;;
*)
	echo "tier.sh: unknown tier $tier (full, small or floor)"
	exit 2
	;;
esac
run="${DATAPATH_RUN:-$run}"

passed=0
failed=0
step() {
	name="$1"
	shift
	echo "=== tier $tier: $name"
	if "$@"; then
		passed=$((passed + 1))
		echo "--- tier $tier: $name passed"
	else
		failed=$((failed + 1))
		echo "--- tier $tier: $name FAILED"
	fi
}

# A VM's vCPUs are threads of the host: they stall (see emulatedCPUs).
export XDPFLOW_EMULATED_CPUS="${XDPFLOW_EMULATED_CPUS-1}"
step datapath ./datapath.test -test.v -test.timeout 50m $short -test.run "$run"
if [ "$tier" = small ]; then
	step frames ./datapath.test -test.v -test.timeout 20m -test.run "$small_frames"
fi
if [ "$tier" = full ] && [ -x ./otelcol-xdpflow ]; then
	step collector env XDPFLOW_COLLECTOR="${VMTEST_WORK:-/work}/otelcol-xdpflow" ./e2e.test -test.v -test.timeout 10m \
		-test.run 'TestCollectorCountsAcrossARestart'
fi
echo "vmtest tier $tier on Linux $(cat /proc/sys/kernel/osrelease): $passed passed, $failed failed"
[ "$failed" -eq 0 ]
