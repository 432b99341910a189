package xdpflowreceiver

import "fmt"

// platformError refuses every platform but Linux, where the kernel's version
// and features are checked when the program loads. Off Linux the factory
// still registers, so that one ocb configuration builds for every target,
// and creating the receiver returns this error.
func platformError(goos, goarch string) error {
	if goos == "linux" {
		return nil
	}
	return fmt.Errorf("the xdpflow receiver needs Linux 6.1+ (XDP and BPF); this collector was built for %s/%s", goos, goarch)
}
