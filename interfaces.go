package xdpflowreceiver

import (
	"fmt"
	"path"
	"slices"
	"strings"
)

// isInterfacePattern reports whether an entry of interfaces or
// exclude_interfaces is a pattern rather than a name.
func isInterfacePattern(entry string) bool { return strings.ContainsAny(entry, `*?[\`) }

// checkInterfaceEntry checks a name by the kernel's rules, a pattern by
// path.Match's.
func checkInterfaceEntry(entry string) error {
	if !isInterfacePattern(entry) {
		return checkInterfaceName(entry)
	}
	if strings.TrimSpace(entry) != entry {
		return fmt.Errorf("%q has surrounding spaces", entry)
	}
	if _, err := path.Match(entry, ""); err != nil {
		return fmt.Errorf("%q is not a valid pattern (*, ?, [...]): %w", entry, err)
	}
	return nil
}

// attachable reports whether the program belongs on the interface named
// name: an entry of interfaces matches it and none of exclude_interfaces.
func (c *Config) attachable(name string) bool {
	return matchesAny(c.Interfaces, name) && !matchesAny(c.ExcludeInterfaces, name)
}

func matchesAny(entries []string, name string) bool {
	for _, e := range entries {
		if ok, _ := path.Match(e, name); ok {
			return true
		}
	}
	return false
}

// namedInterfaces returns the entries of interfaces that are names: they
// must exist at Start, and the receiver is unhealthy while one is missing.
func (c *Config) namedInterfaces() []string {
	var names []string
	for _, e := range c.Interfaces {
		if !isInterfacePattern(e) {
			names = append(names, e)
		}
	}
	return names
}

// missingInterfaces returns the named interfaces that are not attached,
// or whose program is gone with the interface, in configuration order.
func (c *Config) missingInterfaces(attached map[string]int, gone []string) []string {
	var missing []string
	for _, name := range c.namedInterfaces() {
		if _, ok := attached[name]; !ok || slices.Contains(gone, name) {
			missing = append(missing, name)
		}
	}
	return missing
}
