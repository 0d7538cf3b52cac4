package policy

import (
	"fmt"
	"slices"
	"strings"

	"github.com/apiguard/apiguard/loader"
)

// Compile turns the policy into the loader's plain values. prev is the policy
// in force (may be nil). A service that keeps its name keeps its loader ID, so
// its clients' buckets carry over. A new service takes the lowest ID that
// neither policy uses, so it does not inherit the per-client state a removed
// service left under its ID, and only when all are taken the lowest ID the new
// policy leaves free. With prev == nil, IDs follow sorted service names, so the
// same file always compiles the same.
func (p *Policy) Compile(prev *loader.Policy) (*loader.Policy, error) {
	s := &p.Spec
	if len(s.Services) > MaxServices {
		return nil, fmt.Errorf("policy %s: %d services; at most %d", p.Name, len(s.Services), MaxServices)
	}
	out := &loader.Policy{
		Monitor:       s.Mode == Monitor,
		DefaultDrop:   s.DefaultAction == Drop,
		TCPFlagSanity: s.TCPFlagSanity,
		ClientBits4:   s.ClientKey.IPv4,
		ClientBits6:   s.ClientKey.IPv6,
		PrefixBits4:   s.PrefixKey.IPv4,
		PrefixBits6:   s.PrefixKey.IPv6,
		Allow:         slices.Clone(s.Allow),
		Deny:          slices.Clone(s.Deny),
		Conns:         s.Connections.loader(),
		ProvenTTL:     s.Connections.ProvenClientTTL,
		ProveSources:  s.Detection.provesSources(),
		// the reflection bound (docs/synproxy.md)
		SynProxyAnswers: loader.Rate(s.SynProxyAnswers),
	}

	ids, err := assignIDs(s.Services, prev)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", p.Name, err)
	}
	for _, svc := range s.Services {
		ls := loader.Service{
			ID:      ids[svc.Name],
			Name:    svc.Name,
			Monitor: svc.Mode == Monitor,
			Client:  svc.Client.loader(),
			Prefix:  svc.Prefix.loader(),
			Total:   svc.Total.loader(),
			// fragments are counted like packets
			Fragments: loader.Rate(svc.Fragments),
			SynProxy:  svc.SynProxy.loader(),
		}
		svc.loaderConns(&ls)
		switch svc.Protocol {
		case TCP:
			ls.Proto = loader.ProtoTCP
		case UDP:
			ls.Proto = loader.ProtoUDP
		default:
			return nil, fmt.Errorf("policy %s: service %s: unknown protocol %q", p.Name, svc.Name, svc.Protocol)
		}
		for _, r := range svc.Ports {
			ls.Ports = append(ls.Ports, loader.PortRange{First: r.First, Last: r.Last})
		}
		out.Services = append(out.Services, ls)
	}
	return out, nil
}

func (m SynProxyMode) loader() loader.SynProxyMode {
	switch m {
	case SynProxyAuto:
		return loader.SynProxyAuto
	case SynProxyAlways:
		return loader.SynProxyAlways
	}
	return loader.SynProxyOff
}

func (l Limits) loader() loader.Limits {
	return loader.Limits{
		Packets: loader.Rate(l.Packets),
		Bytes:   loader.Rate(l.Bytes),
		Conns:   loader.Rate(l.Connections),
	}
}

// assignIDs gives every service a loader ID in 1..MaxServices.
func assignIDs(svcs []Service, prev *loader.Policy) (map[string]uint32, error) {
	ids := make(map[string]uint32, len(svcs))
	var inNew, inPrev [MaxServices + 1]bool
	prevIDs := map[string]uint32{}
	if prev != nil {
		for _, ps := range prev.Services {
			if ps.ID >= 1 && ps.ID <= uint32(MaxServices) {
				prevIDs[ps.Name] = ps.ID
				inPrev[ps.ID] = true
			}
		}
	}
	var fresh []string
	for _, svc := range svcs {
		if _, dup := ids[svc.Name]; dup {
			return nil, fmt.Errorf("service %s is defined twice", svc.Name)
		}
		if id, ok := prevIDs[svc.Name]; ok {
			ids[svc.Name] = id
			inNew[id] = true
			continue
		}
		ids[svc.Name] = 0
		fresh = append(fresh, svc.Name)
	}
	slices.SortFunc(fresh, strings.Compare)
	for _, name := range fresh {
		id := lowestFree(&inNew, &inPrev)
		if id == 0 {
			id = lowestFree(&inNew, nil)
		}
		if id == 0 {
			return nil, fmt.Errorf("no service ID left for %s", name)
		}
		ids[name] = id
		inNew[id] = true
	}
	return ids, nil
}

func lowestFree(a, b *[MaxServices + 1]bool) uint32 {
	for id := uint32(1); id <= uint32(MaxServices); id++ {
		if !a[id] && (b == nil || !b[id]) {
			return id
		}
	}
	return 0
}
