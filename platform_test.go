package xdpflowreceiver

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPlatformErrorAcceptsOnlyLinux(t *testing.T) {
	require.NoError(t, platformError("linux", "arm64"))
	for _, target := range [][2]string{{"darwin", "arm64"}, {"windows", "amd64"}, {"freebsd", "amd64"}} {
		err := platformError(target[0], target[1])
		require.Error(t, err, target)
		assert.ErrorContains(t, err, "the xdpflow receiver needs Linux 6.1+")
		assert.ErrorContains(t, err, target[0]+"/"+target[1])
	}
}
