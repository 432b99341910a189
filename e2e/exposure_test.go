//go:build linux

package e2e

// What a running collector exposes beyond its exports: pinned BPF
// objects, file descriptors other users could reach, listening sockets.

import (
	"context"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
)

// BPF file descriptor kinds, as /proc/<pid>/fd names their anonymous
// inodes, with the fdinfo field that holds their ID.
var bpfFDKinds = map[string]string{
	"anon_inode:bpf-map":  "map_id:",
	"anon_inode:bpf-prog": "prog_id:",
	"anon_inode:bpf_link": "link_id:",
}

// fdTargets returns pid's file descriptors and what they point to, read
// as root.
func fdTargets(t *testing.T, pid int) map[int]string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]string{}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			t.Fatal(err)
		}
		if target, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil {
			out[fd] = target
		}
	}
	return out
}

// bpfFDs returns, by kind, the lowest BPF file descriptor of pid of each
// kind, checking as root that its fdinfo holds the object's ID (the
// control for probeFDs: root can read them).
func bpfFDs(t *testing.T, pid int) map[string]int {
	t.Helper()
	first := map[string]int{}
	for fd, target := range fdTargets(t, pid) {
		if _, ok := bpfFDKinds[target]; !ok {
			continue
		}
		if cur, ok := first[target]; !ok || fd < cur {
			first[target] = fd
		}
	}
	for kind, field := range bpfFDKinds {
		fd, ok := first[kind]
		if !ok {
			t.Fatalf("pid %d holds no %s file descriptor: %v", pid, kind, fdTargets(t, pid))
		}
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
		if err != nil || !strings.Contains(string(info), field) {
			t.Fatalf("root reading fdinfo %d of pid %d (%s): %v\n%s", fd, pid, kind, err, info)
		}
	}
	return first
}

// checkFDDir checks that /proc/<pid>/fd is a directory of mode 0500
// owned by uid.
func checkFDDir(t *testing.T, pid, uid int) {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || fi.Mode().Perm() != 0o500 || int(st.Uid) != uid {
		t.Errorf("%s: mode %v, owner %d; want dr-x------ owned by %d", dir, fi.Mode(), st.Uid, uid)
	}
}

// runAs runs name with args as u, without any capability, outside the
// test namespaces (procfs is the same there), at most 30 seconds, and
// returns its combined output and error.
func runAs(t *testing.T, u unprivileged, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "setpriv", append(append(setprivArgs(u, nil), name), args...)...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s did not exit within 30s", cmd)
	}
	return string(out), err
}

// fdProbe is what a process of another user, without capabilities, could
// do with a process's file descriptors.
type fdProbe struct {
	// listed tells whether it could list /proc/<pid>/fd (fd numbers only).
	listed  bool
	summary string
}

func (p fdProbe) String() string { return p.summary }

// probeFDs runs, as u without capabilities, the ways of reaching pid's
// BPF objects through procfs: readlink of /proc/<pid>/fd/<n>, reading
// /proc/<pid>/fdinfo/<n> and opening /proc/<pid>/fd/<n>, for one map,
// one program and one link. Each must fail with "Permission denied"
// (while root reads them, see bpfFDs). Listing /proc/<pid>/fd is only
// reported.
func probeFDs(t *testing.T, pid int, u unprivileged) fdProbe {
	t.Helper()
	fds := bpfFDs(t, pid)
	var p fdProbe
	out, err := runAs(t, u, "ls", fmt.Sprintf("/proc/%d/fd", pid))
	p.listed = err == nil
	listing := "denied"
	if p.listed {
		listing = fmt.Sprintf("allowed (%d fd numbers)", len(strings.Fields(out)))
	} else if !strings.Contains(out, "Permission denied") {
		t.Errorf("ls /proc/%d/fd as uid %d: %v, want Permission denied: %s", pid, u.uid, err, out)
	}
	var kinds []string
	for kind := range bpfFDKinds {
		kinds = append(kinds, kind)
	}
	slices.Sort(kinds)
	var reached []string
	for _, kind := range kinds {
		fd := fds[kind]
		link := fmt.Sprintf("/proc/%d/fd/%d", pid, fd)
		info := fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd)
		for _, try := range [][]string{
			{"readlink", "-v", link},
			{"cat", info},
			{"sh", "-c", `exec 3<"$0"`, link},
			{"sh", "-c", `exec 3<>"$0"`, link},
		} {
			out, err := runAs(t, u, try[0], try[1:]...)
			if err == nil || !strings.Contains(out, "Permission denied") {
				t.Errorf("as uid %d without capabilities, %q on %s (%s): %v, want Permission denied: %s",
					u.uid, strings.Join(try, " "), kind, link, err, strings.TrimSpace(out))
			}
		}
		reached = append(reached, fmt.Sprintf("%s fd %d", strings.TrimPrefix(kind, "anon_inode:"), fd))
	}
	p.summary = fmt.Sprintf("listing /proc/%d/fd %s; readlink, fdinfo, open for read and for read-write of %s: Permission denied",
		pid, listing, strings.Join(reached, ", "))
	return p
}

// inetSocket is an entry of /proc/<pid>/net/{tcp,tcp6,udp,udp6}.
type inetSocket struct {
	table string // tcp, tcp6, udp, udp6
	local netip.AddrPort
	state string // hex, 0A: TCP LISTEN
	inode string
}

func (s inetSocket) String() string {
	return fmt.Sprintf("%s %s state %s inode %s", s.table, s.local, s.state, s.inode)
}

// listening tells whether s accepts traffic from anyone: a TCP listener
// or any UDP socket.
func (s inetSocket) listening() bool {
	return strings.HasPrefix(s.table, "udp") || s.state == "0A"
}

// inetSockets returns the TCP and UDP sockets of the network namespace of
// pid, from /proc/<pid>/net.
func inetSockets(t *testing.T, pid int) []inetSocket {
	t.Helper()
	var out []inetSocket
	for _, table := range []string{"tcp", "tcp6", "udp", "udp6"} {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		for _, line := range lines[1:] {
			f := strings.Fields(line)
			if len(f) < 10 {
				t.Fatalf("/proc/%d/net/%s: %q", pid, table, line)
			}
			local, err := parseProcAddr(f[1])
			if err != nil {
				t.Fatalf("/proc/%d/net/%s: %q: %v", pid, table, line, err)
			}
			out = append(out, inetSocket{table: table, local: local, state: f[3], inode: f[9]})
		}
	}
	return out
}

// parseProcAddr parses a /proc/net/{tcp,udp}[6] address: hex address in
// the kernel's (little-endian 32-bit word) order, colon, hex port.
func parseProcAddr(s string) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, ":")
	port, err := strconv.ParseUint(p, 16, 16)
	if !ok || err != nil || (len(a) != 8 && len(a) != 32) {
		return netip.AddrPort{}, fmt.Errorf("address %q", s)
	}
	var b []byte
	for i := 0; i < len(a); i += 8 {
		w, err := strconv.ParseUint(a[i:i+8], 16, 32)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("address %q", s)
		}
		b = append(b, byte(w), byte(w>>8), byte(w>>16), byte(w>>24))
	}
	addr, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), nil
}

// socketInodes returns the inodes of pid's socket file descriptors.
func socketInodes(t *testing.T, pid int) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	re := regexp.MustCompile(`^socket:\[(\d+)\]$`)
	for _, target := range fdTargets(t, pid) {
		if m := re.FindStringSubmatch(target); m != nil {
			out[m[1]] = true
		}
	}
	return out
}

// startRootCollectorWithBPFFS runs the collector as root in namespace ns,
// in a mount namespace of its own where a fresh BPF file system is
// mounted at /sys/fs/bpf (`ip netns exec` remounts /sys, so none is there
// otherwise). It returns the running process and the paths the BPF file
// system held before the collector started (the kernel's own preloaded
// entries, if any).
func startRootCollectorWithBPFFS(t *testing.T, bin, ns, config string) (*process, []string) {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	before := filepath.Join(dir, "bpffs-before.txt")
	// unshare and sh exec, so the process's PID is the collector's.
	const script = `mount -t bpf xdpflow-e2e /sys/fs/bpf && find /sys/fs/bpf -mindepth 1 >"$0" && exec "$@"`
	p := startCollectorCommand(t, "collector (root, own bpffs)", ns, "unshare", "--mount", "--propagation", "private",
		"sh", "-c", script, before, bin, "--config", cfg)
	requireRunsBinary(t, p, bin)
	data, err := os.ReadFile(before)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, line := range strings.Fields(string(data)) {
		paths = append(paths, strings.TrimPrefix(line, "/sys/fs/bpf/"))
	}
	slices.Sort(paths)
	return p, paths
}

// bpffsPaths returns the paths under /sys/fs/bpf in pid's mount
// namespace, relative to it, after checking that a BPF file system is
// mounted there.
func bpffsPaths(t *testing.T, pid int) []string {
	t.Helper()
	mounts, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	mounted := false
	for line := range strings.SplitSeq(string(mounts), "\n") {
		f := strings.Fields(line)
		if i := slices.Index(f, "-"); i > 0 && len(f) > i+1 && f[4] == "/sys/fs/bpf" && f[i+1] == "bpf" {
			mounted = true
		}
	}
	if !mounted {
		t.Fatalf("no BPF file system at /sys/fs/bpf in the mount namespace of pid %d:\n%s", pid, mounts)
	}
	root := fmt.Sprintf("/proc/%d/root/sys/fs/bpf", pid)
	var paths []string
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path != root {
			paths = append(paths, strings.TrimPrefix(path, root+"/"))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(paths)
	return paths
}

// minimalConfig is a collector with only the xdpflow receiver on the
// receiver veth and the debug exporter.
func minimalConfig() collectorConfig {
	return collectorConfig{
		Receivers: []component{xdpflowReceiver(xdpflowSettings{
			Ports: []int{port}, CollectionInterval: time.Second, MinSnapshotInterval: time.Second,
		})},
		Exporters: []component{{ID: "debug", Settings: "verbosity: basic"}},
	}
}

// debugExports counts the exports the debug exporter (basic verbosity)
// has logged.
func debugExports(p *process) int {
	return strings.Count(p.output.String(), `"data points"`)
}

// waitDebugExports waits until the debug exporter has logged n exports.
func waitDebugExports(t *testing.T, p *process, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for debugExports(p) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d exports logged after %v, waiting for %d", debugExports(p), timeout, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRootCollectorExposesNothing runs the collector as root with only
// the xdpflow receiver and the debug exporter (telemetry level none), in
// the receiver namespace and a mount namespace with a writable BPF file
// system at /sys/fs/bpf, and sends it traffic. Nothing is pinned there;
// its file descriptors are in a 0500 root-owned /proc/<pid>/fd that
// nobody cannot list, and nobody cannot follow, read or open its BPF
// descriptors; no TCP or UDP socket exists in the namespace, and the
// collector holds none.
func TestRootCollectorExposesNothing(t *testing.T) {
	bin := requireCollector(t)
	requireTools(t, "setpriv", "unshare", "find", "ss")
	u := nobody(t)
	pair := netnstest.New(t)
	p, before := startRootCollectorWithBPFFS(t, bin, pair.Receiver, minimalConfig().String())
	pid := p.pid()

	// A pin would have succeeded: the file system is writable.
	probeDir := fmt.Sprintf("/proc/%d/root/sys/fs/bpf/xdpflow-e2e-probe", pid)
	if err := os.Mkdir(probeDir, 0o700); err != nil {
		t.Fatalf("the BPF file system of the collector's mount namespace is not writable: %v", err)
	}
	if err := os.Remove(probeDir); err != nil {
		t.Fatal(err)
	}
	if got := bpffsPaths(t, pid); !slices.Equal(got, before) {
		t.Errorf("/sys/fs/bpf after start-up: %v; before the collector started: %v", got, before)
	}

	// Before any test traffic (whose sockets live in the namespace too):
	// no TCP or UDP socket at all in the namespace.
	if socks := inetSockets(t, pid); len(socks) != 0 {
		t.Errorf("TCP/UDP sockets in the receiver namespace: %v", socks)
	}
	checkListeners(t, pair.Receiver)

	// Traffic, and snapshots of it.
	exports := debugExports(p)
	sent := sendUDP(t, pair, netnstest.SenderIPv4, 40304, netnstest.ReceiverIPv4, port, netnstest.UDPSizes(64, 1472))
	waitDebugExports(t, p, exports+2, 10*time.Second)

	if got := bpffsPaths(t, pid); !slices.Equal(got, before) {
		t.Errorf("/sys/fs/bpf while counting: %v; before the collector started: %v", got, before)
	}
	checkFDDir(t, pid, 0)
	probe := probeFDs(t, pid, u)
	if probe.listed {
		t.Errorf("uid %d could list /proc/%d/fd of a root process", u.uid, pid)
	}
	var kinds []string
	for _, target := range fdTargets(t, pid) {
		kinds = append(kinds, target)
	}
	slices.Sort(kinds)
	socks := socketInodes(t, pid)
	var owned []inetSocket
	for _, s := range inetSockets(t, pid) {
		if socks[s.inode] {
			owned = append(owned, s)
		}
	}
	if len(owned) != 0 {
		t.Errorf("the collector holds TCP/UDP sockets: %v", owned)
	}
	stopDetaches(t, pair, p)
	t.Logf("sent %s; /sys/fs/bpf held %v before start-up and the same while counting; collector fds: %s",
		sent, before, strings.Join(compact(kinds), ", "))
	t.Logf("uid %d without capabilities: %s", u.uid, probe)
	t.Logf("TCP/UDP sockets in the namespace before traffic: none; sockets the collector holds while counting: %d, none TCP/UDP", len(socks))
}

// compact returns the distinct strings of sorted s with their counts.
func compact(s []string) []string {
	var out []string
	for i := 0; i < len(s); {
		j := i
		for j < len(s) && s[j] == s[i] {
			j++
		}
		out = append(out, fmt.Sprintf("%d× %s", j-i, s[i]))
		i = j
	}
	return out
}

// TestDefaultTelemetryListensOnLoopbackOnly runs the same configuration
// without a service.telemetry section: the collector then serves its own
// metrics, and the only sockets in the namespace are its listeners on
// loopback (the xdpflow receiver and the debug exporter open none).
func TestDefaultTelemetryListensOnLoopbackOnly(t *testing.T) {
	bin := requireCollector(t)
	pair := netnstest.New(t)
	config := minimalConfig()
	config.DefaultTelemetry = true
	p := startCollector(t, bin, "default-telemetry", pair.Receiver, config.String())
	waitDebugExports(t, p, 1, 10*time.Second)
	socks := socketInodes(t, p.pid())
	all := inetSockets(t, p.pid())
	for _, s := range all {
		if !socks[s.inode] {
			t.Errorf("a socket in the namespace that is not the collector's: %s", s)
		}
		if !s.local.Addr().IsLoopback() {
			t.Errorf("the collector has a socket outside loopback: %s", s)
		}
	}
	ss, err := netnsRun(pair.Receiver, "ss", "-Hltunp")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("without service.telemetry, the namespace's TCP/UDP sockets: %v\n%s", all, ss)
	if err := p.stop(); err != nil {
		t.Errorf("collector: %v", err)
	}
	if len(all) == 0 {
		t.Log("no socket at all: the collector's default telemetry no longer listens")
	}
}
