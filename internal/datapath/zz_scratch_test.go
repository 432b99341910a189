package datapath

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

func minOf(b *testing.B, p *ebpf.Program, frame []byte) time.Duration {
	best := time.Hour
	for i := 0; i < 15; i++ {
		_, dur, err := p.Benchmark(frame, 1000000, nil)
		if err != nil { b.Fatal(err) }
		if dur < best { best = dur }
	}
	return best
}

func BenchmarkScratch(b *testing.B) {
	empty, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}})
	if err != nil { b.Fatal(err) }
	defer empty.Close()
	frame := tcp4Frame("198.51.100.1", 40000, 8080, 64)
	b.Logf("empty %v", minOf(b, empty, frame))
	for _, v := range strings.Fields(os.Getenv("VARIANTS")) {
		spec, err := ebpf.LoadCollectionSpec("/tmp/exp/" + v + ".o")
		if err != nil { b.Fatal(err) }
		spec.Variables["all_ports"].Set(uint8(1))
		coll, err := ebpf.NewCollection(spec)
		if err != nil { b.Fatal(v, err) }
		b.Logf("%s %v", v, minOf(b, coll.Programs["xdpflow"], frame))
		coll.Close()
	}
	b.Logf("empty %v", minOf(b, empty, frame))
}
