package xdpflowreceiver

import (
	"fmt"
	"strings"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componentstatus"
)

// healthReporter reports the receiver's health to the host through
// componentstatus, once per change: a recoverable error while the flow
// table cannot be read or a named interface is missing, OK again once a
// snapshot reads the table with every named interface attached.
type healthReporter struct {
	host component.Host
	// last is the message of the error reported last; "" after OK. The
	// collector reports OK itself when Start returns.
	last string
}

// report reports err as a recoverable error, or OK when err is nil,
// unless it is what was reported last.
func (h *healthReporter) report(err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if msg == h.last {
		return
	}
	h.last = msg
	if err == nil {
		componentstatus.ReportStatus(h.host, componentstatus.NewEvent(componentstatus.StatusOK))
		return
	}
	componentstatus.ReportStatus(h.host, componentstatus.NewRecoverableErrorEvent(err))
}

// snapshotHealth is the health after a snapshot whose read returned
// readErr, while the named interfaces in missing were not attached.
func snapshotHealth(readErr error, missing []string) error {
	if readErr != nil {
		return fmt.Errorf("read the XDP flow table: %w", readErr)
	}
	if len(missing) > 0 {
		return fmt.Errorf("configured interfaces missing, their traffic is not counted until they come back: %s", strings.Join(missing, ", "))
	}
	return nil
}
