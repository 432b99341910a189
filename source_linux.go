package xdpflowreceiver

import (
	"errors"

	"go.uber.org/zap"

	"github.com/xdpflow/xdpflowreceiver/internal/datapath"
)

// openDatapath loads the XDP program and attaches it to every configured
// interface, logging the mode used. On any failure it undoes what it did.
func openDatapath(cfg *Config, logger *zap.Logger) (flowSource, error) {
	opts, mode := cfg.datapathOptions()
	dp, err := datapath.Load(opts)
	if err != nil {
		return nil, err
	}
	for _, iface := range cfg.Interfaces {
		used, err := dp.Attach(iface, mode)
		if err != nil {
			return nil, errors.Join(err, dp.Close())
		}
		logger.Info("XDP program attached",
			zap.String("interface", iface),
			zap.String("attach_mode", used.String()),
			zap.String("requested_attach_mode", mode.String()))
	}
	return dp, nil
}
