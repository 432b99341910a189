package xdpflowreceiver

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.opentelemetry.io/collector/consumer/consumertest"
)

// statusHost records the status events a component reports.
type statusHost struct {
	component.Host
	mu     sync.Mutex
	events []*componentstatus.Event
}

func (h *statusHost) Report(ev *componentstatus.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, ev)
}

// statuses returns the statuses reported so far, in order.
func (h *statusHost) statuses() []componentstatus.Status {
	h.mu.Lock()
	defer h.mu.Unlock()
	var st []componentstatus.Status
	for _, ev := range h.events {
		st = append(st, ev.Status())
	}
	return st
}

func (h *statusHost) lastErr() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.events[len(h.events)-1].Err()
}

// waitForStatuses waits until the host has been told exactly want.
func waitForStatuses(t *testing.T, h *statusHost, want ...componentstatus.Status) {
	t.Helper()
	require.Eventually(t, func() bool { return len(h.statuses()) >= len(want) }, 5*time.Second, 5*time.Millisecond)
	time.Sleep(5 * fastConfig().CollectionInterval) // a repeated report would show now
	require.Equal(t, want, h.statuses())
}

func TestStatusFollowsReadsAndNamedInterfaces(t *testing.T) {
	src := newFakeSource()
	host := &statusHost{}
	r := newTestReceiver(t, fastConfig(), consumertest.NewNop(), src)
	require.NoError(t, r.Start(context.Background(), host))
	time.Sleep(5 * fastConfig().CollectionInterval)
	require.Empty(t, host.statuses(), "healthy snapshots report nothing: the collector reported OK after Start")

	src.mu.Lock()
	src.readErr = errors.New("map read failed")
	src.mu.Unlock()
	waitForStatuses(t, host, componentstatus.StatusRecoverableError)
	assert.ErrorContains(t, host.lastErr(), "read the XDP flow table: map read failed")

	src.mu.Lock()
	src.readErr = nil
	src.mu.Unlock()
	waitForStatuses(t, host, componentstatus.StatusRecoverableError, componentstatus.StatusOK)

	src.mu.Lock()
	src.gone = []string{"eth0"}
	src.mu.Unlock()
	waitForStatuses(t, host, componentstatus.StatusRecoverableError, componentstatus.StatusOK, componentstatus.StatusRecoverableError)
	assert.EqualError(t, host.lastErr(), "configured interfaces missing, their traffic is not counted until they come back: eth0")

	src.mu.Lock()
	src.gone = nil
	src.mu.Unlock()
	waitForStatuses(t, host, componentstatus.StatusRecoverableError, componentstatus.StatusOK, componentstatus.StatusRecoverableError, componentstatus.StatusOK)
	require.NoError(t, r.Shutdown(context.Background()))
	assert.Len(t, host.statuses(), 4, "Shutdown's snapshot reports nothing")
}
