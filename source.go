package xdpflowreceiver

import (
	"go.uber.org/zap"

	"github.com/xdpflow/xdpflowreceiver/internal/datapath"
)

// flowSource is what the receiver needs of the datapath; tests replace it.
type flowSource interface {
	ReadFlows(dst *datapath.FlowTable) error
	// ReadDirty starts a new epoch and reads the entries changed in the
	// one it ends, when ok (Datapath.ReadDirty).
	ReadDirty(dst *datapath.FlowTable) (ok bool, err error)
	Evict(keys []datapath.FlowKey, dst *datapath.FlowTable) error
	Stats() (datapath.Stats, error)
	Events() <-chan datapath.TriggerEvent
	// Attached maps the attached interfaces' names to their ifindex.
	Attached() map[string]int
	// InterfaceNames maps the ifindex of every interface attached since
	// the start to its name.
	InterfaceNames() map[int]string
	// Gone lists the attached interfaces that were deleted.
	Gone() []string
	// State says what was found in the state directory; zero without one.
	State() datapath.StateReport
	DetachAll() error
	Close() error
}

// openFunc loads the datapath and attaches it to cfg.Interfaces.
type openFunc func(cfg *Config, logger *zap.Logger) (flowSource, error)
