package xdpflowreceiver

import (
	"path/filepath"
	"strings"

	"go.opentelemetry.io/collector/component"
)

// forInstance returns a copy of c whose state, if any, is kept in the
// subdirectory of state_directory named after the receiver id: receivers
// of one collector, or collectors sharing a directory under different
// names, never take over each other's tables.
func (c *Config) forInstance(id component.ID) *Config {
	cp := *c
	if c.StateDirectory != "" {
		cp.stateDir = filepath.Join(c.StateDirectory, strings.ReplaceAll(id.String(), "/", "_"))
	}
	return &cp
}
