//go:build linux

package e2e

// The collector as an unprivileged user with exactly CAP_BPF,
// CAP_NET_ADMIN and CAP_PERFMON (docs/deploy.md), through util-linux
// setpriv: it runs and counts exactly with the three, and fails to start,
// naming the capability, without any one of them.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xdpflow/xdpflowreceiver/internal/netnstest"
)

// capability is one of the three capabilities the collector needs: its
// setpriv name, its kernel name and bit.
type capability struct {
	setpriv string
	name    string
	bit     uint
}

// requiredCaps are the capabilities docs/deploy.md grants, no more.
var requiredCaps = []capability{
	{"bpf", "CAP_BPF", 39},
	{"net_admin", "CAP_NET_ADMIN", 12},
	{"perfmon", "CAP_PERFMON", 38},
}

// capMask returns the capability set of caps as /proc/<pid>/status
// prints it.
func capMask(caps []capability) uint64 {
	var m uint64
	for _, c := range caps {
		m |= 1 << c.bit
	}
	return m
}

func capNames(caps []capability) []string {
	var names []string
	for _, c := range caps {
		names = append(names, c.name)
	}
	return names
}

// unprivileged is the user the tests run processes as: nobody, with its
// primary group.
type unprivileged struct{ uid, gid int }

func nobody(t *testing.T) unprivileged {
	t.Helper()
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("these tests run processes as the user nobody: %v", err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatalf("user nobody: %v", err)
	}
	return unprivileged{uid, gid}
}

// requireTools fails the test unless the named commands are installed.
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("this test needs the %s command (util-linux): %v", tool, err)
		}
	}
}

// setprivArgs are the setpriv options that run a program as u with
// exactly caps: ambient (so they survive the exec and are effective),
// inheritable (which ambient requires) and the bounding set, no
// supplementary groups and no_new_privs, as the systemd unit does.
func setprivArgs(u unprivileged, caps []capability) []string {
	set := "-all"
	for _, c := range caps {
		set += ",+" + c.setpriv
	}
	return []string{
		"--reuid=" + strconv.Itoa(u.uid), "--regid=" + strconv.Itoa(u.gid), "--clear-groups", "--no-new-privs",
		"--inh-caps=" + set, "--ambient-caps=" + set, "--bounding-set=" + set,
	}
}

// sharedDir creates a directory that u can read and write, for the
// configuration and output of processes running as u: t.TempDir is only
// accessible to root. It is removed when the test ends.
func sharedDir(t *testing.T, u unprivileged) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "xdpflow-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chown(dir, u.uid, u.gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Every directory above must let others through.
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			t.Fatalf("%s (mode %v) does not let other users through to %s: set TMPDIR to a directory they can reach", d, fi.Mode().Perm(), dir)
		}
		if d == "/" {
			break
		}
	}
	return dir
}

// writeFileFor writes data to a file in dir owned by u, with mode perm.
func writeFileFor(t *testing.T, u unprivileged, dir, name, data string, perm os.FileMode) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(data), perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, u.uid, u.gid); err != nil {
		t.Fatal(err)
	}
	return path
}

// debugFileConfig is a collector with only the xdpflow receiver on the
// receiver veth (native mode, port 8080, a snapshot every second) and the
// debug exporter writing detailed output to out, with no telemetry
// endpoint.
func debugFileConfig(out string) string {
	return fmt.Sprintf(`receivers:
  xdpflow:
    interfaces: [%s]
    attach_mode: native
    ports: [%d]
    collection_interval: 1s
    min_snapshot_interval: 1s
exporters:
  debug:
    verbosity: detailed
    use_internal_logger: false
    output_paths: [%q]
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    metrics:
      receivers: [xdpflow]
      exporters: [debug]
`, netnstest.ReceiverIface, port, out)
}

// readDebugFile parses the debug exporter's output file.
func readDebugFile(path string) (flowMetrics, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return flowMetrics{}, err
	}
	pts, err := parseDebug(string(data))
	if err != nil {
		return flowMetrics{}, err
	}
	return latestFlows(pts, netnstest.ReceiverIface), nil
}

// procStatus returns the fields of /proc/<pid>/status (or of a task's
// status file, given its path).
func procStatus(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for line := range strings.SplitSeq(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out, nil
}

// xdpProgram returns the ID of the XDP program attached to iface in
// namespace ns, or "" if there is none.
func xdpProgram(t *testing.T, ns, iface string) string {
	t.Helper()
	xdp, ok := netnstest.LinkXDP(t, ns, iface)
	if !ok {
		return ""
	}
	return strconv.FormatUint(uint64(xdp.ProgID), 10)
}

// runToExit runs name with args in namespace ns until it exits, at most
// timeout (the test fails if it has not exited by then; it is killed),
// and returns its combined output and exit error.
func runToExit(t *testing.T, ns string, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := netnsCommand(ctx, ns, name, args...)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// As startProcess: killed if the test binary dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		errc <- cmd.Run()
	}()
	err := <-errc
	if ctx.Err() != nil {
		t.Fatalf("%s did not exit within %v (killed):\n%s", cmd, timeout, out.String())
	}
	return out.String(), err
}

// missingCapsIn returns the capabilities an error message names as
// missing: "missing CAP_X, CAP_Y" or "lacks CAP_X".
func missingCapsIn(msg string) []string {
	m := regexp.MustCompile(`(?:missing|lacks) (CAP_[A-Z_]+(?:, CAP_[A-Z_]+)*)`).FindStringSubmatch(msg)
	if m == nil {
		return nil
	}
	return strings.Split(m[1], ", ")
}

// TestLeastPrivilege runs the collector as nobody with exactly CAP_BPF,
// CAP_NET_ADMIN and CAP_PERFMON (ambient, inheritable, bounding set,
// no_new_privs) in the receiver namespace, attached in native mode to the
// receiver veth, the debug exporter writing to a file nobody owns. Every
// thread of the running collector has exactly the three capabilities and
// runs as nobody; UDP over IPv4 and IPv6 is counted exactly; SIGTERM shuts
// it down cleanly and detaches the program. Another process of the same
// user, without capabilities, cannot read its file descriptors.
func TestLeastPrivilege(t *testing.T) {
	bin := requireCollector(t)
	requireTools(t, "setpriv")
	u := nobody(t)
	pair := netnstest.New(t)
	dir := sharedDir(t, u)
	out := writeFileFor(t, u, dir, "debug.txt", "", 0o600)
	cfg := writeFileFor(t, u, dir, "config.yaml", debugFileConfig(out), 0o600)

	args := append(setprivArgs(u, requiredCaps), bin, "--config", cfg)
	p := startProcess(t, "collector (nobody, 3 capabilities)", pair.Receiver, "setpriv", args...)
	p.waitOutput(t, collectorReady, readyTimeout)
	if o := p.output.String(); !strings.Contains(o, `"attach_mode": "native"`) {
		t.Fatalf("the collector did not log a native attachment:\n%s", o)
	}
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.pid())); err != nil || exe != bin {
		t.Fatalf("pid %d runs %q (%v), want the collector %s", p.pid(), exe, err, bin)
	}
	progID := xdpProgram(t, pair.Receiver, netnstest.ReceiverIface)
	if progID == "" {
		t.Fatalf("no XDP program on %s", netnstest.ReceiverIface)
	}

	// Credentials of the process and of each of its threads.
	want := fmt.Sprintf("%016x", capMask(requiredCaps))
	ids := fmt.Sprintf("%d\t%d\t%d\t%d", u.uid, u.uid, u.uid, u.uid)
	gids := fmt.Sprintf("%d\t%d\t%d\t%d", u.gid, u.gid, u.gid, u.gid)
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", p.pid()))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("threads of pid %d: %v", p.pid(), err)
	}
	var st map[string]string
	for _, path := range append([]string{fmt.Sprintf("/proc/%d/status", p.pid())}, tasks...) {
		s, err := procStatus(path)
		if errors.Is(err, os.ErrNotExist) {
			continue // a thread that exited
		}
		if err != nil {
			t.Fatal(err)
		}
		if st == nil {
			st = s
		}
		for _, f := range []string{"CapEff", "CapPrm", "CapInh", "CapAmb", "CapBnd"} {
			if s[f] != want {
				t.Errorf("%s: %s %s, want %s (%s)", path, f, s[f], want, strings.Join(capNames(requiredCaps), ", "))
			}
		}
		if strings.ReplaceAll(s["Uid"], " ", "\t") != ids || strings.ReplaceAll(s["Gid"], " ", "\t") != gids {
			t.Errorf("%s: Uid %q Gid %q, want %q and %q", path, s["Uid"], s["Gid"], ids, gids)
		}
		if s["Groups"] != "" || s["NoNewPrivs"] != "1" {
			t.Errorf("%s: Groups %q NoNewPrivs %q, want none and 1", path, s["Groups"], s["NoNewPrivs"])
		}
	}
	t.Logf("collector pid %d, %d threads: Uid %s, Gid %s, CapEff %s, CapPrm %s, CapAmb %s, CapBnd %s, NoNewPrivs %s",
		p.pid(), len(tasks), st["Uid"], st["Gid"], st["CapEff"], st["CapPrm"], st["CapAmb"], st["CapBnd"], st["NoNewPrivs"])

	// Its file descriptors, BPF objects included, are closed to another
	// process of the same user without capabilities: /proc/<pid>/fd
	// belongs to that user, but the kernel lets only a process with at
	// least the target's capabilities follow or read the descriptors.
	checkFDDir(t, p.pid(), u.uid)
	probe := probeFDs(t, p.pid(), u)
	t.Logf("a capability-less process of uid %d on the collector's fds: %s", u.uid, probe)

	sent := map[conn]counts{}
	for _, x := range []struct {
		src, dst netip.Addr
		sport    uint16
	}{
		{netnstest.SenderIPv4, netnstest.ReceiverIPv4, 40104},
		{netnstest.SenderIPv6, netnstest.ReceiverIPv6, 40106},
	} {
		c := conn{Transport: "udp", Src: x.src, SrcPort: x.sport, DstPort: port}
		sent[c] = sendUDP(t, pair, x.src, x.sport, x.dst, port, netnstest.UDPSizes(150, netnstest.MaxUDPPayload(x.src)))
	}
	read := func() (flowMetrics, error) { return readDebugFile(out) }
	fm := waitFlows(t, read, sent, valuesTimeout)
	if err := p.stop(); err != nil {
		t.Errorf("collector: %v", err)
	}
	if o := p.output.String(); !strings.Contains(o, "Shutdown complete.") {
		t.Errorf("the collector did not log a complete shutdown")
	}
	if id := xdpProgram(t, pair.Receiver, netnstest.ReceiverIface); id != "" {
		t.Errorf("XDP program %s still on %s after the collector exited", id, netnstest.ReceiverIface)
	}
	for c, w := range sent {
		if got := fm.flows[c]; got != w {
			t.Errorf("%s: exported %s, the sender sent %s", c, got, w)
		}
	}
	for c, got := range fm.flows {
		if _, ok := sent[c]; !ok {
			t.Errorf("exported %s for %s, which was not sent", got, c)
		}
	}
	for _, pr := range fm.problems {
		t.Errorf("unexpected data point: %s", pr)
	}
	if fm.overflow != 0 {
		t.Errorf("xdpflow.overflow.packets = %d, want 0", fm.overflow)
	}
	conns := sortedConns(sent)
	t.Logf("program %s on %s; final values:\n%s", progID, netnstest.ReceiverIface,
		table(conns, []string{"sender", "collector (nobody, 3 caps)"}, sent, fm.flows))
}

// TestLeastPrivilegeEachCapabilityNeeded runs the collector as
// TestLeastPrivilege does with one of the three capabilities dropped, and
// with none: it must exit with an error before it is ready, naming
// exactly the missing capabilities, and leave no program on the veth.
func TestLeastPrivilegeEachCapabilityNeeded(t *testing.T) {
	bin := requireCollector(t)
	requireTools(t, "setpriv")
	u := nobody(t)
	pair := netnstest.New(t)
	dir := sharedDir(t, u)
	out := writeFileFor(t, u, dir, "debug.txt", "", 0o600)
	cfg := writeFileFor(t, u, dir, "config.yaml", debugFileConfig(out), 0o600)

	type run struct {
		label   string
		granted []capability
		missing []string
	}
	runs := []run{{label: "none", missing: capNames(requiredCaps)}}
	for i, c := range requiredCaps {
		granted := slices.Concat(requiredCaps[:i], requiredCaps[i+1:])
		runs = append(runs, run{label: "without " + c.name, granted: granted, missing: []string{c.name}})
	}
	var summary []string
	for _, r := range runs {
		t.Run(r.label, func(t *testing.T) {
			args := append(setprivArgs(u, r.granted), bin, "--config", cfg)
			began := time.Now()
			output, err := runToExit(t, pair.Receiver, 60*time.Second, "setpriv", args...)
			took := time.Since(began)
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Fatalf("with %v the collector exited with %v, want a failure:\n%s", capNames(r.granted), err, output)
			}
			if strings.Contains(output, collectorReady) {
				t.Errorf("the collector became ready with %v", capNames(r.granted))
			}
			var errLine string
			for line := range strings.SplitSeq(output, "\n") {
				if strings.HasPrefix(line, "Error: ") {
					errLine = line
				}
			}
			if !strings.Contains(errLine, "xdpflow receiver") {
				t.Fatalf("no xdpflow start-up error in the output:\n%s", output)
			}
			if got := missingCapsIn(errLine); !slices.Equal(got, r.missing) {
				t.Errorf("the error names %v as missing, want %v: %s", got, r.missing, errLine)
			}
			if id := xdpProgram(t, pair.Receiver, netnstest.ReceiverIface); id != "" {
				t.Errorf("XDP program %s left on %s", id, netnstest.ReceiverIface)
			}
			summary = append(summary, fmt.Sprintf("%-22s exit %d after %v: %s", r.label+":", exit.ExitCode(), took.Round(time.Millisecond), errLine))
		})
	}
	t.Logf("start-up errors:\n%s", strings.Join(summary, "\n"))
}
