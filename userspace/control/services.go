package control

import "strings"

// ServiceStatus is one service of the policy in force and what the kernel
// counted of it. Passed, Dropped and WouldDrop are the kernel's own
// per-service counters (the service_counters map, also exported as
// apiguard_service_packets_total and apiguard_service_bytes_total): every
// packet the service owned since the daemon started, clients the state map
// evicted included. WouldDrop are the drops monitor mode let through: how
// "start in monitor mode" is checked before switching to enforce.
//
// Clients, Packets, Bytes, Drops and ClientsDropped come from the kernel's
// per-client state instead: the clients it tracks for the service now (an
// LRU: a flood of new sources evicts old ones), what they sent, and their
// drops (in monitor mode, those enforcing would have made). They say whose
// traffic it is; the counters say how much.
type ServiceStatus struct {
	Name      string      `json:"name"`
	ID        uint32      `json:"id"`
	Protocol  string      `json:"protocol"`
	Ports     string      `json:"ports"`
	Mode      string      `json:"mode"` // enforce or monitor (its own, or the policy's)
	Passed    PacketCount `json:"passed"`
	Dropped   PacketCount `json:"dropped"`
	WouldDrop PacketCount `json:"would_drop"`
	Clients   int         `json:"clients"`
	Packets   uint64      `json:"packets"`
	Bytes     uint64      `json:"bytes"`
	Drops     uint64      `json:"drops"`
	// ClientsDropped counts the tracked clients with at least one drop.
	ClientsDropped int `json:"clients_dropped"`
}

// PacketCount is packets and their bytes.
type PacketCount struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// ValidServiceName reports whether s could name a service (for the
// clients top query): the policy's own rule is checked by the daemon, this
// only keeps junk out of errors and logs.
func ValidServiceName(s string) bool {
	return s != "" && len(s) <= 64 && !strings.ContainsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
	})
}
