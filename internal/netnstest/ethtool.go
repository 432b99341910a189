//go:build linux

package netnstest

import (
	"encoding/binary"
	"fmt"
	"path"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// This file switches device features (offloads) on and off through the
// SIOCETHTOOL ioctl, as `ethtool -k` and `ethtool -K` do, by the kernel's
// feature names (ETH_SS_FEATURES: tx-tcp-segmentation, rx-gro, ...).

// offloadFeatures are the features `ethtool -K IFACE tso off gso off gro
// off` switches off, as ethtool's patterns for these three names: every TCP
// segmentation offload (tx-tcp-segmentation, tx-tcp6-segmentation, ...),
// generic segmentation and generic receive offload. With them off, one
// frame sent is one packet received.
var offloadFeatures = []string{"tx-tcp*-segmentation", "tx-generic-segmentation", "rx-gro"}

// matchFeatures returns the names that match one of patterns (path.Match
// syntax, like ethtool's fnmatch), or an error if a pattern matches none.
func matchFeatures(names, patterns []string) ([]string, error) {
	var matched []string
	for _, pat := range patterns {
		n := 0
		for _, name := range names {
			if ok, err := path.Match(pat, name); err != nil {
				return nil, err
			} else if ok {
				matched = append(matched, name)
				n++
			}
		}
		if n == 0 {
			return nil, fmt.Errorf("the kernel has no feature %q", pat)
		}
	}
	return matched, nil
}

// Constants of <linux/ethtool.h> that x/sys/unix lacks.
const (
	ethSSFeatures = 4  // ETH_SS_FEATURES, the string set of feature names
	ethGStringLen = 32 // ETH_GSTRING_LEN
)

// ethtoolIfreq is struct ifreq with its ifr_data member, padded to at
// least the size of struct ifreq, which the kernel copies whole.
type ethtoolIfreq struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24]byte
}

// ethtool issues the SIOCETHTOOL command in buf (which starts with the
// command number) for the interface iface, through the socket fd, in fd's
// network namespace.
func ethtool(fd int, iface string, buf []byte) error {
	if len(iface) >= unix.IFNAMSIZ {
		return fmt.Errorf("interface name %q too long", iface)
	}
	var ifr ethtoolIfreq
	copy(ifr.name[:], iface)
	ifr.data = unsafe.Pointer(&buf[0])
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	if errno != 0 {
		return errno
	}
	return nil
}

// featureNames returns the kernel's feature names, indexed by feature bit.
func featureNames(fd int, iface string) ([]string, error) {
	// struct ethtool_sset_info: cmd, reserved, sset_mask, data[1].
	info := make([]byte, 4+4+8+4)
	binary.NativeEndian.PutUint32(info[0:], unix.ETHTOOL_GSSET_INFO)
	binary.NativeEndian.PutUint64(info[8:], 1<<ethSSFeatures)
	if err := ethtool(fd, iface, info); err != nil {
		return nil, fmt.Errorf("ETHTOOL_GSSET_INFO: %w", err)
	}
	if binary.NativeEndian.Uint64(info[8:])&(1<<ethSSFeatures) == 0 {
		return nil, fmt.Errorf("ETHTOOL_GSSET_INFO: no feature names")
	}
	n := binary.NativeEndian.Uint32(info[16:])
	// struct ethtool_gstrings: cmd, string_set, len, data[len * 32].
	strs := make([]byte, 12+int(n)*ethGStringLen)
	binary.NativeEndian.PutUint32(strs[0:], unix.ETHTOOL_GSTRINGS)
	binary.NativeEndian.PutUint32(strs[4:], ethSSFeatures)
	binary.NativeEndian.PutUint32(strs[8:], n)
	if err := ethtool(fd, iface, strs); err != nil {
		return nil, fmt.Errorf("ETHTOOL_GSTRINGS: %w", err)
	}
	names := make([]string, n)
	for i := range names {
		s := strs[12+i*ethGStringLen : 12+(i+1)*ethGStringLen]
		names[i], _, _ = strings.Cut(string(s), "\x00")
	}
	return names, nil
}

// activeFeatures returns every feature of iface by name, true if active.
func activeFeatures(fd int, iface string) (map[string]bool, error) {
	names, err := featureNames(fd, iface)
	if err != nil {
		return nil, err
	}
	// struct ethtool_gfeatures: cmd, size, features[size] of
	// {available, requested, active, never_changed}.
	blocks := (len(names) + 31) / 32
	buf := make([]byte, 8+blocks*16)
	binary.NativeEndian.PutUint32(buf[0:], unix.ETHTOOL_GFEATURES)
	binary.NativeEndian.PutUint32(buf[4:], uint32(blocks))
	if err := ethtool(fd, iface, buf); err != nil {
		return nil, fmt.Errorf("ETHTOOL_GFEATURES: %w", err)
	}
	active := make(map[string]bool, len(names))
	for bit, name := range names {
		word := binary.NativeEndian.Uint32(buf[8+(bit/32)*16+8:])
		active[name] = word&(1<<(bit%32)) != 0
	}
	return active, nil
}

// setFeatures requests the features named in want to be on (true) or off
// (false) on iface, then reads the features back and returns an error
// unless every one is as wanted (the kernel may refuse or override a
// request without failing it).
func setFeatures(fd int, iface string, want map[string]bool) error {
	names, err := featureNames(fd, iface)
	if err != nil {
		return err
	}
	bits := make(map[string]int, len(names))
	for bit, name := range names {
		bits[name] = bit
	}
	// struct ethtool_sfeatures: cmd, size, features[size] of
	// {valid, requested}.
	blocks := (len(names) + 31) / 32
	buf := make([]byte, 8+blocks*8)
	binary.NativeEndian.PutUint32(buf[0:], unix.ETHTOOL_SFEATURES)
	binary.NativeEndian.PutUint32(buf[4:], uint32(blocks))
	for name, on := range want {
		bit, ok := bits[name]
		if !ok {
			return fmt.Errorf("%s: the kernel has no feature %q", iface, name)
		}
		valid, requested := buf[8+(bit/32)*8:], buf[8+(bit/32)*8+4:]
		binary.NativeEndian.PutUint32(valid, binary.NativeEndian.Uint32(valid)|1<<(bit%32))
		if on {
			binary.NativeEndian.PutUint32(requested, binary.NativeEndian.Uint32(requested)|1<<(bit%32))
		}
	}
	// A positive result (ETHTOOL_F_WISH, ETHTOOL_F_UNSUPPORTED) is no
	// error: the features read back tell.
	if err := ethtool(fd, iface, buf); err != nil {
		return fmt.Errorf("ETHTOOL_SFEATURES on %s: %w", iface, err)
	}
	active, err := activeFeatures(fd, iface)
	if err != nil {
		return err
	}
	var wrong []string
	for name, on := range want {
		if active[name] != on {
			wrong = append(wrong, fmt.Sprintf("%s is %s", name, onOff(active[name])))
		}
	}
	if len(wrong) > 0 {
		return fmt.Errorf("%s: features not as requested: %s", iface, strings.Join(wrong, ", "))
	}
	return nil
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

// ethtoolSocket opens a socket for ethtool ioctls in the calling thread's
// network namespace; the ioctls act on that namespace's interfaces,
// whichever thread issues them.
func ethtoolSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket for ethtool ioctls: %w", err)
	}
	return fd, nil
}

// disableOffloads switches offloadFeatures off on the interface iface of
// the calling thread's network namespace, and checks that they are off.
func disableOffloads(iface string) error {
	if err := switchFeatures(iface, false, offloadFeatures); err != nil {
		return fmt.Errorf("switch offloads off: %w", err)
	}
	return nil
}

// switchFeatures switches the features of the interface iface of the
// calling thread's network namespace named by patterns on or off, and
// checks that they took effect (setFeatures).
func switchFeatures(iface string, on bool, patterns []string) error {
	fd, err := ethtoolSocket()
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	names, err := featureNames(fd, iface)
	if err != nil {
		return err
	}
	matched, err := matchFeatures(names, patterns)
	if err != nil {
		return err
	}
	want := make(map[string]bool, len(matched))
	for _, f := range matched {
		want[f] = on
	}
	if err := setFeatures(fd, iface, want); err != nil {
		return fmt.Errorf("switch %v %s on %s: %w", matched, onOff(on), iface, err)
	}
	return nil
}

// nsFeatures returns the features of the interface iface in namespace ns
// by their kernel names (those of `ethtool -k`'s long listing, e.g.
// tx-tcp-segmentation, tx-generic-segmentation, rx-gro), true for the
// active ones.
func nsFeatures(ns, iface string) (map[string]bool, error) {
	var active map[string]bool
	err := Do(ns, func() error {
		fd, err := ethtoolSocket()
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		active, err = activeFeatures(fd, iface)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("features of %s in netns %s: %w", iface, ns, err)
	}
	return active, nil
}

// SetFeatures switches the features of the interface iface in namespace
// ns named by patterns (ethtool's, e.g. tx-generic-segmentation or
// "tx-tcp*-segmentation") on or off, as `ethtool -K` does, and checks that
// they took effect. Tests use it to undo what New set up for one of them,
// e.g. GSO on a sender whose segments a test counts.
func SetFeatures(ns, iface string, on bool, patterns ...string) error {
	return Do(ns, func() error {
		if err := switchFeatures(iface, on, patterns); err != nil {
			return fmt.Errorf("netns %s: %w", ns, err)
		}
		return nil
	})
}
