//go:build linux

package datapath

import (
	"maps"
	"testing"

	"github.com/xdpflow/xdpflowreceiver/internal/privtest"
)

// TestReadFlowsIterateFallback checks that the fallback for kernels
// without batch lookups reads the same flows as the batched path.
func TestReadFlowsIterateFallback(t *testing.T) {
	privtest.RequireRoot(t)
	d := loadDatapath(t, testOptions())
	for i := range 1000 {
		runFrame(t, d, keyFrame(i))
	}
	var batched, iterated FlowTable
	if err := d.readBatched(&batched); err != nil {
		t.Fatal(err)
	}
	if err := d.readIterating(&iterated); err != nil {
		t.Fatal(err)
	}
	if batched.Len() != 1000 || iterated.Len() != 1000 {
		t.Fatalf("batched %d flows, iterated %d, want 1000 each", batched.Len(), iterated.Len())
	}
	if !maps.Equal(flowMap(t, &batched), flowMap(t, &iterated)) {
		t.Error("batched and iterated reads differ")
	}

	// Once batch lookups are known to be unsupported, ReadFlows iterates.
	d.noBatchOp = true
	var fallback FlowTable
	if err := d.ReadFlows(&fallback); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(flowMap(t, &batched), flowMap(t, &fallback)) {
		t.Error("ReadFlows without batch lookups differs from the batched read")
	}
}
