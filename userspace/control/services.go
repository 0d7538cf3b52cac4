package control

import "strings"

// ServiceStatus is one service of the policy in force and what the kernel's
// per-client state says of it: the clients it tracks for the service now,
// and their packets, bytes and drops. For a service in monitor mode the
// drops are those enforcing it would have made: how "start in monitor mode"
// is checked before switching to enforce. The figures cover the clients the
// state map holds now (an LRU: a flood of new sources evicts old ones).
type ServiceStatus struct {
	Name     string `json:"name"`
	ID       uint32 `json:"id"`
	Protocol string `json:"protocol"`
	Ports    string `json:"ports"`
	Mode     string `json:"mode"` // enforce or monitor (its own, or the policy's)
	Clients  int    `json:"clients"`
	Packets  uint64 `json:"packets"`
	Bytes    uint64 `json:"bytes"`
	Drops    uint64 `json:"drops"`
	// ClientsDropped counts the tracked clients with at least one drop.
	ClientsDropped int `json:"clients_dropped"`
}

// ValidServiceName reports whether s could name a service (for the
// clients top query): the policy's own rule is checked by the daemon, this
// only keeps junk out of errors and logs.
func ValidServiceName(s string) bool {
	return s != "" && len(s) <= 64 && !strings.ContainsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
	})
}
