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
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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

// toolPackages are the Debian packages of the commands the tests use.
var toolPackages = map[string]string{
	"setpriv": "util-linux", "unshare": "util-linux", "find": "findutils",
	"ss": "iproute2", "setcap": "libcap2-bin",
}

// requireTools fails the test unless the named commands are installed.
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("this test needs the %s command (%s): %v", tool, toolPackages[tool], err)
		}
	}
}

// setprivArgs are the setpriv options that run a program as u with
// exactly caps: ambient (so they survive the exec and are effective),
// inheritable (which ambient requires) and the bounding set, no
// supplementary groups and no_new_privs, as the systemd unit does.
func setprivArgs(u unprivileged, caps []capability) []string {
	set := setprivCaps(caps)
	return []string{
		"--reuid=" + strconv.Itoa(u.uid), "--regid=" + strconv.Itoa(u.gid), "--clear-groups", "--no-new-privs",
		"--inh-caps=" + set, "--ambient-caps=" + set, "--bounding-set=" + set,
	}
}

// setprivCaps returns the setpriv capability list of exactly caps.
func setprivCaps(caps []capability) string {
	set := "-all"
	for _, c := range caps {
		set += ",+" + c.setpriv
	}
	return set
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

// writeDebugFileConfig writes, in dir and owned by u, an empty file for
// the debug exporter's output and a debugFileConfig that writes to it,
// their names ending in suffix. It returns their paths.
func writeDebugFileConfig(t *testing.T, u unprivileged, dir, suffix string) (debugFile, string) {
	t.Helper()
	out := writeFileFor(t, u, dir, "debug"+suffix+".txt", "", 0o600)
	return debugFile(out), writeFileFor(t, u, dir, "config"+suffix+".yaml", debugFileConfig(out), 0o600)
}

// debugFileConfig is a collector with only the xdpflow receiver on the
// receiver veth (native mode, port 8080, a snapshot every second) and the
// debug exporter writing detailed output to out, with no telemetry
// endpoint.
func debugFileConfig(out string) string {
	return collectorConfig{
		Receivers: []component{xdpflowReceiver(xdpflowSettings{
			Ports: []int{port}, CollectionInterval: time.Second, MinSnapshotInterval: time.Second,
		})},
		Exporters: []component{debugFileExporter(out)},
	}.String()
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
	errc := make(chan error, 1)
	err := startTiedToTest(cmd, func() { errc <- cmd.Wait() })
	if err == nil {
		err = <-errc
	}
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

// checkCapabilityRefusal checks the output and exit error of a collector
// run that must not start for lack of capabilities: a non-zero exit before
// it was ready, with an xdpflow start-up error naming exactly missing as
// the missing capabilities, and no program left on the receiver veth. It
// returns the exit code and the error line.
func checkCapabilityRefusal(t *testing.T, pair *netnstest.Pair, output string, err error, missing []string) (int, string) {
	t.Helper()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("the collector exited with %v, want a failure naming %v as missing:\n%s", err, missing, output)
	}
	if strings.Contains(output, collectorReady) {
		t.Errorf("the collector became ready")
	}
	errLine := lastErrorLine(output)
	if !strings.Contains(errLine, "xdpflow receiver") {
		t.Fatalf("no xdpflow start-up error in the output:\n%s", output)
	}
	if got := missingCapsIn(errLine); !slices.Equal(got, missing) {
		t.Errorf("the error names %v as missing, want %v: %s", got, missing, errLine)
	}
	checkDetached(t, pair, "the collector refused to start")
	return exit.ExitCode(), errLine
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
	out, cfg := writeDebugFileConfig(t, u, dir, "")

	args := append(setprivArgs(u, requiredCaps), bin, "--config", cfg)
	p := startCollectorCommand(t, "collector (nobody, 3 capabilities)", pair.Receiver, "setpriv", args...)
	requireNativeAttach(t, p)
	requireRunsBinary(t, p, bin)
	progID := requireAttached(t, pair, "collector started")

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

	_, sent := sendUDPBothFamilies(t, pair, 40104, 40106, 150)
	fm := waitLatest(t, out.read, sent, valuesTimeout)
	stopDetaches(t, pair, p)
	if o := p.output.String(); !strings.Contains(o, "Shutdown complete.") {
		t.Errorf("the collector did not log a complete shutdown")
	}
	checkAllFlows(t, fm, sent)
	conns := sortedConns(sent)
	t.Logf("program %d on %s; final values:\n%s", progID, netnstest.ReceiverIface,
		table(conns, []string{"sender", "collector (nobody, 3 caps)"}, sent, fm.values))
}

// TestLeastPrivilegeEachCapabilityNeeded runs the collector as
// TestLeastPrivilege does with one of the three capabilities dropped, and
// with none, receiving only and with directions: [receive, transmit]: it
// must exit with an error before it is ready, naming exactly the missing
// capabilities, and leave no program on the veth (XDP or egress).
func TestLeastPrivilegeEachCapabilityNeeded(t *testing.T) {
	bin := requireCollector(t)
	requireTools(t, "setpriv")
	u := nobody(t)
	pair := netnstest.New(t)
	dir := sharedDir(t, u)
	_, receiveCfg := writeDebugFileConfig(t, u, dir, "")
	out := writeFileFor(t, u, dir, "debug-transmit.txt", "", 0o600)
	transmitCfg := writeFileFor(t, u, dir, "config-transmit.yaml", collectorConfig{
		Receivers: []component{xdpflowReceiver(xdpflowSettings{
			Ports: []int{port}, CollectionInterval: time.Second, MinSnapshotInterval: time.Second,
			More: "directions: [receive, transmit]\n",
		})},
		Exporters: []component{debugFileExporter(out)},
	}.String(), 0o600)

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
	for _, directions := range []struct{ label, cfg string }{{"receive", receiveCfg}, {"transmit", transmitCfg}} {
		for _, r := range runs {
			t.Run(directions.label+" "+r.label, func(t *testing.T) {
				args := append(setprivArgs(u, r.granted), bin, "--config", directions.cfg)
				began := time.Now()
				output, err := runToExit(t, pair.Receiver, 60*time.Second, "setpriv", args...)
				took := time.Since(began)
				code, errLine := checkCapabilityRefusal(t, pair, output, err, r.missing)
				if n := tcxEgressPrograms(t, pair); n != 0 {
					t.Errorf("%d TCX egress programs on %s after the refusal, want 0", n, netnstest.ReceiverIface)
				}
				summary = append(summary, fmt.Sprintf("%-31s exit %d after %v: %s", directions.label+", "+r.label+":", code, took.Round(time.Millisecond), errLine))
			})
		}
	}
	t.Logf("start-up errors:\n%s", strings.Join(summary, "\n"))
}

// fileCaps is the setcap argument docs/deploy.md gives the collector.
const fileCaps = "cap_bpf,cap_net_admin,cap_perfmon+ep"

// collectorWithFileCaps copies the collector into dir and gives the copy
// the file capabilities fileCaps. dir must be on a file system with
// security extended attributes and not mounted nosuid: the kernel ignores
// file capabilities on nosuid mounts.
func collectorWithFileCaps(t *testing.T, bin, dir string) string {
	t.Helper()
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	if fs.Flags&unix.ST_NOSUID != 0 {
		t.Fatalf("%s is on a nosuid mount, where the kernel ignores file capabilities: set TMPDIR to a directory on another file system", dir)
	}
	src, err := os.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	path := filepath.Join(dir, filepath.Base(bin))
	dst, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(dst, src)
	if err := errors.Join(err, dst.Close()); err != nil {
		t.Fatalf("copy %s to %s: %v", bin, path, err)
	}
	if out, err := exec.Command("setcap", fileCaps, path).CombinedOutput(); err != nil {
		t.Fatalf("setcap %s %s: %v: %s(the file system must support security extended attributes)", fileCaps, path, err, out)
	}
	return path
}

// userShell is a user's shell: it prints its own credentials, with shell
// builtins only so that they are the shell's and not a child's, then runs
// its arguments in its place.
const userShell = `while IFS= read -r l; do case $l in Uid:*|CapPrm:*|CapEff:*|CapAmb:*|NoNewPrivs:*) echo "shell $l";; esac; done </proc/$$/status; exec "$@"`

// asShellOf returns setpriv arguments that start userShell as u, holding
// exactly the capabilities held (ambient; none if held is empty), and
// have it run argv. setpriv keeps root's capabilities in its own
// permitted set when it changes the uid, but a program it then executes
// as u without file capabilities holds only the ambient ones: the shell
// has what a login shell of u has (with held, what pam_cap or systemd's
// AmbientCapabilities would add).
func asShellOf(u unprivileged, held []capability, argv ...string) []string {
	set := setprivCaps(held)
	args := []string{"--reuid=" + strconv.Itoa(u.uid), "--regid=" + strconv.Itoa(u.gid), "--clear-groups", "--inh-caps=" + set}
	if len(held) > 0 {
		args = append(args, "--ambient-caps="+set)
	}
	return slices.Concat(args, []string{"/bin/sh", "-c", userShell, "sh"}, argv)
}

// shellCredentials returns the fields userShell printed in output.
func shellCredentials(output string) map[string]string {
	out := map[string]string{}
	for line := range strings.SplitSeq(output, "\n") {
		if rest, ok := strings.CutPrefix(line, "shell "); ok {
			if k, v, ok := strings.Cut(rest, ":"); ok {
				out[k] = strings.TrimSpace(v)
			}
		}
	}
	return out
}

// fileCapsRun is one way of starting the collector with file capabilities.
type fileCapsRun struct {
	label string
	// setpriv are the arguments of setpriv, run as root in the receiver
	// namespace, before the collector's command line.
	setpriv []string
	// fromShell tells whether the collector is started from userShell,
	// holding shellCaps, or directly by root's setpriv.
	fromShell bool
	shellCaps []capability
	// granted are the capabilities the collector gets; with all three it
	// runs, else it must refuse to start naming the others.
	granted    []capability
	noNewPrivs bool
}

// TestFileCapabilitiesNoNewPrivs gives a copy of the collector the file
// capabilities of docs/deploy.md (setcap cap_bpf,cap_net_admin,
// cap_perfmon+ep) and starts it as nobody in the receiver namespace in
// four ways. Under no_new_privs execve intersects the permitted set the
// file grants with the one the executing process already has, so file
// capabilities count only as far as the caller already holds them:
//
//   - from a shell of nobody without capabilities, the collector gets the
//     three capabilities, attaches and counts exactly;
//   - from that shell through `setpriv --no-new-privs`, it gets none and
//     fails to start, naming all three;
//   - from a shell of nobody holding CAP_BPF, through
//     `setpriv --no-new-privs`, it gets only CAP_BPF and fails, naming the
//     other two;
//   - started by root with `setpriv --reuid=nobody --no-new-privs`, it gets
//     the three and runs: setpriv keeps all of root's capabilities in its
//     permitted set across the uid change (PR_SET_KEEPCAPS), so the file
//     grants it nothing it does not already hold.
func TestFileCapabilitiesNoNewPrivs(t *testing.T) {
	bin := requireCollector(t)
	requireTools(t, "setpriv", "setcap")
	u := nobody(t)
	pair := netnstest.New(t)
	dir := sharedDir(t, u)
	copied := collectorWithFileCaps(t, bin, dir)

	bpfOnly := requiredCaps[:1]
	runs := []fileCapsRun{{
		label:     "nobody's shell",
		setpriv:   asShellOf(u, nil),
		fromShell: true,
		granted:   requiredCaps,
	}, {
		label:      "nobody's shell, setpriv --no-new-privs",
		setpriv:    asShellOf(u, nil, "setpriv", "--no-new-privs"),
		fromShell:  true,
		noNewPrivs: true,
	}, {
		label:      "nobody's shell with CAP_BPF, setpriv --no-new-privs",
		setpriv:    asShellOf(u, bpfOnly, "setpriv", "--no-new-privs"),
		fromShell:  true,
		shellCaps:  bpfOnly,
		granted:    bpfOnly,
		noNewPrivs: true,
	}, {
		label:      "root: setpriv --reuid=nobody --no-new-privs",
		setpriv:    []string{"--reuid=" + strconv.Itoa(u.uid), "--regid=" + strconv.Itoa(u.gid), "--clear-groups", "--no-new-privs"},
		granted:    requiredCaps,
		noNewPrivs: true,
	}}
	var summary []string
	for i, r := range runs {
		t.Run(r.label, func(t *testing.T) {
			out, cfg := writeDebugFileConfig(t, u, dir, fmt.Sprintf("-%d", i))
			args := slices.Concat(r.setpriv, []string{copied, "--config", cfg})
			var result, output string
			if len(r.granted) == len(requiredCaps) {
				result, output = runWithFileCaps(t, pair, u, r, copied, args, out, uint16(40200+i))
			} else {
				o, err := runToExit(t, pair.Receiver, 60*time.Second, "setpriv", args...)
				missing := slices.DeleteFunc(capNames(requiredCaps), func(name string) bool {
					return slices.Contains(capNames(r.granted), name)
				})
				_, errLine := checkCapabilityRefusal(t, pair, o, err, missing)
				result, output = "refused: "+errLine, o
			}
			caller := "root's setpriv"
			if r.fromShell {
				sh := shellCredentials(output)
				want := fmt.Sprintf("%016x", capMask(r.shellCaps))
				if sh["CapPrm"] != want || sh["CapEff"] != want || sh["NoNewPrivs"] != "0" {
					t.Errorf("the shell had CapPrm %q CapEff %q NoNewPrivs %q, want %s, %s and 0:\n%s",
						sh["CapPrm"], sh["CapEff"], sh["NoNewPrivs"], want, want, output)
				}
				caller = "shell: CapPrm " + sh["CapPrm"]
			}
			summary = append(summary, fmt.Sprintf("%s (%s):\n    %s", r.label, caller, result))
		})
	}
	t.Logf("%s with file capabilities %s:\n%s", copied, fileCaps, strings.Join(summary, "\n"))
}

// runWithFileCaps starts the collector as r says, with setpriv args, and
// checks that it attaches and that every thread runs as u with exactly the
// three capabilities permitted and effective, none ambient, and r's
// no_new_privs; that UDP from sport is counted exactly; and that SIGTERM
// shuts it down and detaches the program. It returns a summary and the
// process's output.
func runWithFileCaps(t *testing.T, pair *netnstest.Pair, u unprivileged, r fileCapsRun, bin string, args []string, out debugFile, sport uint16) (string, string) {
	t.Helper()
	p := startCollectorCommand(t, "collector ("+r.label+")", pair.Receiver, "setpriv", args...)
	requireRunsBinary(t, p, bin)
	progID := requireAttached(t, pair, "collector started")
	want := fmt.Sprintf("%016x", capMask(r.granted))
	nnp := map[bool]string{false: "0", true: "1"}[r.noNewPrivs]
	ids := strings.Repeat(strconv.Itoa(u.uid)+" ", 4)
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", p.pid()))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("threads of pid %d: %v", p.pid(), err)
	}
	st, err := procStatus(fmt.Sprintf("/proc/%d/status", p.pid()))
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range tasks {
		s, err := procStatus(path)
		if errors.Is(err, os.ErrNotExist) {
			continue // a thread that exited
		}
		if err != nil {
			t.Fatal(err)
		}
		if s["CapPrm"] != want || s["CapEff"] != want || s["CapAmb"] != fmt.Sprintf("%016x", 0) || s["NoNewPrivs"] != nnp {
			t.Errorf("%s: CapPrm %s CapEff %s CapAmb %s NoNewPrivs %s, want %s, %s, none and %s",
				path, s["CapPrm"], s["CapEff"], s["CapAmb"], s["NoNewPrivs"], want, want, nnp)
		}
		if strings.Join(strings.Fields(s["Uid"]), " ")+" " != ids {
			t.Errorf("%s: Uid %q, want %d four times", path, s["Uid"], u.uid)
		}
	}

	c := conn{Transport: "udp", Src: netnstest.SenderIPv4, SrcPort: sport, DstPort: port}
	sent := map[conn]counts{c: sendUDP(t, pair, netnstest.SenderIPv4, sport, netnstest.ReceiverIPv4, port, netnstest.UDPSizes(100, netnstest.MaxUDPPayload(netnstest.SenderIPv4)))}
	fm := waitLatest(t, out.read, sent, valuesTimeout)
	stopDetaches(t, pair, p)
	if got := fm.values[c]; got != sent[c] || len(fm.values) != 1 {
		t.Errorf("exported %v, the sender sent %s for %s", fm.values, sent[c], c)
	}
	return fmt.Sprintf("collector CapPrm %s CapEff %s CapAmb %s NoNewPrivs %s, %d threads; program %d attached; %s: sent %s, exported %s",
		st["CapPrm"], st["CapEff"], st["CapAmb"], st["NoNewPrivs"], len(tasks), progID, c, sent[c], fm.values[c]), p.output.String()
}
