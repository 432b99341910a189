//go:build linux

package datapath

import (
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

// verifierBudget is the most instructions the verifier may process for
// any program under any options: half its limit of 1,000,000, so that a
// change that nears the limit fails here, on every kernel of the matrix,
// before it fails a user's load.
const verifierBudget = 500_000

// budgetAddressModes are the ways an address dimension can be kept:
// dropped, whole, truncated to prefixes, or replaced by named CIDRs with
// an "other" series outside them (the longest path: a trie lookup and
// both outcomes).
var budgetAddressModes = []string{"dropped", "whole", "prefix", "cidrs"}

// budgetSetting is one value of every load-time option that changes what
// the verifier walks in the packet programs: ports (all or a set),
// protocols, how each address is kept, the other dimensions (all kept or
// all dropped) and change tracking. Transmit and the state directory
// change no program: every load here loads the egress program too, and a
// state directory only pins maps.
type budgetSetting struct {
	ports, protos, src, dst, others, track int // indexes into the axes below
}

var (
	budgetPorts  = [][]uint16{nil, {8080}}
	budgetProtos = [][]Protocol{{TCP, UDP}, {TCP}, {UDP}}
	budgetBools  = []bool{false, true}
)

func (b budgetSetting) name() string {
	return fmt.Sprintf("ports=%d/protos=%v/src=%s/dst=%s/others=%v/track=%v", len(budgetPorts[b.ports]),
		budgetProtos[b.protos], budgetAddressModes[b.src], budgetAddressModes[b.dst], budgetBools[b.others],
		budgetBools[b.track])
}

func (b budgetSetting) options() Options {
	cidrs := []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("fd00:db8::/64")}
	o := testOptions()
	o.Ports, o.Protocols, o.TrackChanges = budgetPorts[b.ports], budgetProtos[b.protos], budgetBools[b.track]
	others := budgetBools[b.others]
	o.Dimensions = Dimensions{SrcPort: others, DstPort: others, Proto: others, Ifindex: others}
	o.Dimensions.SrcAddr = keepAddress(budgetAddressModes[b.src], &o.Source)
	o.Dimensions.DstAddr = keepAddress(budgetAddressModes[b.dst], &o.Destination)
	if o.Dimensions == (Dimensions{}) {
		o.Dimensions.Proto = true // the zero value means ConnectionDimensions
	}
	if o.Source.CIDRs || o.Destination.CIDRs {
		o.CIDRs, o.OtherOutsideCIDRs = cidrs, true
	}
	return o
}

// budgetSettings returns every combination of the axes (all), or the
// settings one axis away from either end of them: from the first value of
// every axis and from the last, each axis through all its values.
func budgetSettings(all bool) []budgetSetting {
	sizes := []int{len(budgetPorts), len(budgetProtos), len(budgetAddressModes), len(budgetAddressModes),
		len(budgetBools), len(budgetBools)}
	fromIndexes := func(ix []int) budgetSetting {
		return budgetSetting{ix[0], ix[1], ix[2], ix[3], ix[4], ix[5]}
	}
	seen := map[budgetSetting]bool{}
	var out []budgetSetting
	add := func(b budgetSetting) {
		if !seen[b] {
			seen[b] = true
			out = append(out, b)
		}
	}
	if all {
		ix := make([]int, len(sizes))
		for {
			add(fromIndexes(ix))
			k := 0
			for ; k < len(ix); k++ {
				if ix[k]++; ix[k] < sizes[k] {
					break
				}
				ix[k] = 0
			}
			if k == len(ix) {
				return out
			}
		}
	}
	for _, end := range []bool{false, true} {
		base := make([]int, len(sizes))
		if end {
			for k := range base {
				base[k] = sizes[k] - 1
			}
		}
		for k := range sizes {
			for v := range sizes[k] {
				ix := append([]int(nil), base...)
				ix[k] = v
				add(fromIndexes(ix))
			}
		}
	}
	return out
}

// keepAddress sets agg for mode and reports whether the address is kept.
func keepAddress(mode string, agg *Aggregation) bool {
	switch mode {
	case "dropped":
		return false
	case "prefix":
		agg.PrefixIPv4, agg.PrefixIPv6 = 24, 64
	case "cidrs":
		agg.CIDRs = true
	}
	return true
}

// verifierStats are the verifier's figures for one load of one program.
type verifierStats struct {
	insns int
	time  time.Duration
}

var (
	processedRe = regexp.MustCompile(`processed (\d+) insns`)
	verifyRe    = regexp.MustCompile(`verification time (\d+) usec`)
)

// parseVerifierStats reads the stats lines of a LogLevelStats log.
func parseVerifierStats(log string) (verifierStats, error) {
	m := processedRe.FindStringSubmatch(log)
	if m == nil {
		return verifierStats{}, fmt.Errorf("no 'processed N insns' in the verifier log %q", log)
	}
	var s verifierStats
	s.insns, _ = strconv.Atoi(m[1])
	if m := verifyRe.FindStringSubmatch(log); m != nil {
		us, _ := strconv.Atoi(m[1])
		s.time = time.Duration(us) * time.Microsecond
	}
	return s, nil
}

// loadForStats loads spec with the verifier's statistics and returns them
// per program.
func loadForStats(t *testing.T, spec *ebpf.CollectionSpec) map[string]verifierStats {
	t.Helper()
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{
		Programs: ebpf.ProgramOptions{LogLevel: ebpf.LogLevelStats},
	})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	defer coll.Close()
	stats := map[string]verifierStats{}
	for name, p := range coll.Programs {
		s, err := parseVerifierStats(p.VerifierLog)
		if err != nil {
			t.Fatalf("program %s: %v", name, err)
		}
		stats[name] = s
	}
	return stats
}

// budgetWorst is the costliest load of one program.
type budgetWorst struct {
	verifierStats
	options string
	slowest time.Duration
	loads   int
}

// TestVerifierBudget loads every program under the settings of
// budgetSettings (every combination with XDPFLOW_STRESS set, as `make
// stress` runs it; with -short only the two ends of the axes, as the
// emulated arm64 kernel runs it), records what the verifier processed and how long it
// took, and fails if any program exceeds verifierBudget. The packet
// programs are loaded under each setting; the others read no option but
// change tracking and are loaded once for each. -v prints the worst case
// per program (BENCHMARKS.md, "Verifier").
func TestVerifierBudget(t *testing.T) {
	privtest.RequireRoot(t)
	worst := map[string]*budgetWorst{}
	record := func(options string, stats map[string]verifierStats) {
		for prog, s := range stats {
			w := worst[prog]
			if w == nil {
				w = &budgetWorst{}
				worst[prog] = w
			}
			w.loads++
			w.slowest = max(w.slowest, s.time)
			if s.insns > w.insns {
				w.verifierStats, w.options = s, options
			}
		}
	}
	packetPrograms := map[string]bool{xdpflowProgXdpflow: true, xdpflowProgXdpflowEgress: true}
	load := func(b budgetSetting, keep func(prog string) bool) {
		opts := b.options().withDefaults()
		if err := opts.validate(); err != nil {
			t.Fatalf("%s: %v", b.name(), err)
		}
		spec, err := loadXdpflow()
		if err != nil {
			t.Fatal(err)
		}
		if err := configure(spec, opts); err != nil {
			t.Fatal(err)
		}
		for name := range spec.Programs {
			if !keep(name) {
				delete(spec.Programs, name)
			}
		}
		record(b.name(), loadForStats(t, spec))
	}

	settings := budgetSettings(os.Getenv("XDPFLOW_STRESS") != "")
	if testing.Short() {
		last := budgetSetting{len(budgetPorts) - 1, len(budgetProtos) - 1, len(budgetAddressModes) - 1,
			len(budgetAddressModes) - 1, len(budgetBools) - 1, len(budgetBools) - 1}
		settings = []budgetSetting{{}, last} // the two ends
	}
	start := time.Now()
	for _, b := range settings {
		load(b, func(prog string) bool { return packetPrograms[prog] })
	}
	for track := range budgetBools {
		load(budgetSetting{track: track}, func(prog string) bool { return !packetPrograms[prog] })
	}
	dump, err := loadXdpflowDump()
	if err != nil {
		t.Fatal(err)
	}
	record("any", loadForStats(t, dump))

	var report strings.Builder
	fmt.Fprintf(&report, "Linux %s, %d settings in %v; budget %d instructions\n",
		kernelRelease(), len(settings), time.Since(start).Round(time.Millisecond), verifierBudget)
	progs := make([]string, 0, len(worst))
	for p := range worst {
		progs = append(progs, p)
	}
	sort.Strings(progs)
	for _, p := range progs {
		w := worst[p]
		fmt.Fprintf(&report, "| %s | %d | %v | %v | %d | %s |\n", p, w.insns, w.time.Round(time.Millisecond),
			w.slowest.Round(time.Millisecond), w.loads, w.options)
		if w.insns > verifierBudget {
			t.Errorf("program %s: the verifier processed %d instructions with %s, over the budget of %d",
				p, w.insns, w.options, verifierBudget)
		}
	}
	t.Logf("| program | most instructions processed | its verification time | slowest verification | loads | setting of the most |\n%s",
		report.String())
}
