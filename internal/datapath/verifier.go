//go:build linux

package datapath

import (
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// verifierTailLines is how much of a refusal's verifier log an error
// carries: the lines that say why, not the walk that led there.
const verifierTailLines = 6

// verifierError wraps err, a load that verr says the verifier refused,
// naming the running kernel and ending with the last lines of the log.
// The whole log is in verr (errors.As), printed by %+v.
func verifierError(err error, verr *ebpf.VerifierError) error {
	var tail []string
	log := verr.Log
	if n := len(log); n > verifierTailLines {
		log = log[n-verifierTailLines:]
	}
	for _, line := range log {
		tail = append(tail, "\t"+strings.TrimSpace(line))
	}
	return fmt.Errorf("load xdpflow program: the verifier of Linux %s refused it: %w\n%s",
		kernelRelease(), err, strings.Join(tail, "\n"))
}

// kernelRelease returns the running kernel's release (uname -r).
func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "(unknown)"
	}
	return unix.ByteSliceToString(u.Release[:])
}
