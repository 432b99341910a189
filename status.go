package xdpflowreceiver

import (
	"fmt"
	"sort"
	"strings"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componentstatus"
)

// healthReporter reports the receiver's health to the host through
// componentstatus, once per change: a recoverable error while the flow
// table cannot be read or a configured interface is gone, OK again once a
// snapshot reads the table with every interface present.
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
// readErr, with the interfaces in gone deleted.
func snapshotHealth(readErr error, gone []string) error {
	if readErr != nil {
		return fmt.Errorf("read the XDP flow table: %w", readErr)
	}
	if len(gone) > 0 {
		names := append([]string(nil), gone...)
		sort.Strings(names)
		return fmt.Errorf("interfaces deleted while attached, their traffic is not counted: %s", strings.Join(names, ", "))
	}
	return nil
}
