package xdpflowreceiver

import (
	"errors"
	"slices"

	"go.uber.org/zap"

	"github.com/xdpflow/xdpflowreceiver/internal/datapath"
)

// openDatapath loads the XDP program, attaches it to every named
// interface, and follows the interfaces that interfaces matches as they
// come and go, logging every attachment with the mode used. On any
// failure it undoes what it did.
func openDatapath(cfg *Config, logger *zap.Logger) (flowSource, error) {
	opts, mode := cfg.datapathOptions()
	dp, err := datapath.Load(opts)
	if err != nil {
		return nil, err
	}
	logState(logger, opts.StateDir, dp.State())
	if err := dp.FullReadFallback(); err != nil {
		logger.Warn("Snapshots read the flow table with batch lookups, ~2.5x the CPU of the walk in the kernel that could not be loaded", zap.Error(err))
	}
	for _, iface := range cfg.namedInterfaces() {
		used, err := dp.Attach(iface, mode)
		if err != nil {
			return nil, errors.Join(err, dp.Close())
		}
		logAttached(logger, iface, used, mode, dp.EgressHook(iface))
	}
	if err := dp.ReleaseStaleLinks(cfg.attachable); err != nil {
		logger.Warn("Failed to detach an interface an earlier collector attached and this one does not", zap.Error(err))
	}
	report := func(ev datapath.InterfaceEvent) { logInterfaceEvent(logger, cfg, mode, ev) }
	if err := dp.Follow(cfg.attachable, mode, report); err != nil {
		return nil, errors.Join(err, dp.Close())
	}
	return dp, nil
}

// logState says whether the flow table of an earlier collector was taken
// over from the state directory.
func logState(logger *zap.Logger, dir string, st datapath.StateReport) {
	switch {
	case dir == "":
	case st.Restored:
		logger.Info("Flow table taken over from the state directory: counts and start times go on",
			zap.String("state_directory", dir), zap.Time("table_started", st.Started))
	case st.Reason != "":
		logger.Warn("Starting a new flow table in the state directory: "+st.Reason,
			zap.String("state_directory", dir))
	default:
		logger.Info("Flow table pinned in the state directory: a restarted collector takes it over",
			zap.String("state_directory", dir))
	}
}

// logAttached logs an attachment: the XDP mode used, and with transmit
// counting the hook of the egress program (tcx or tc).
func logAttached(logger *zap.Logger, iface string, used, requested datapath.AttachMode, egressHook string) {
	fields := []zap.Field{
		zap.String("interface", iface),
		zap.String("attach_mode", used.String()),
		zap.String("requested_attach_mode", requested.String()),
	}
	if egressHook != "" {
		fields = append(fields, zap.String("egress_hook", egressHook))
	}
	logger.Info("XDP program attached", fields...)
}

// logInterfaceEvent logs what following the interfaces did. A named
// interface that goes away is a warning (the receiver is unhealthy until
// it is back); one that a pattern matched is not.
func logInterfaceEvent(logger *zap.Logger, cfg *Config, mode datapath.AttachMode, ev datapath.InterfaceEvent) {
	switch {
	case ev.Interface == "":
		logger.Warn("Watching interfaces failed; subscribing again", zap.Error(ev.Err))
	case ev.Err != nil:
		logger.Error("Failed to attach the XDP program to an interface; its traffic is not counted",
			zap.String("interface", ev.Interface), zap.Error(ev.Err))
	case ev.Attached:
		logAttached(logger, ev.Interface, ev.Mode, mode, ev.EgressHook)
	case slices.Contains(cfg.namedInterfaces(), ev.Interface):
		logger.Warn("Interface deleted: its XDP program is gone; counts already made on it are still exported, and the program is attached again when the interface comes back",
			zap.String("interface", ev.Interface))
	default:
		logger.Info("Interface deleted: its XDP program is gone; counts already made on it are still exported",
			zap.String("interface", ev.Interface))
	}
}
