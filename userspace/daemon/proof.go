package daemon

import "net/netip"

// proofOf answers the detector's question (detect.Options.ProofOf): when did a
// source inside p last complete a TCP handshake with this host? The datapath
// records proven sources by client key (loader.Datapath.SourceProof); p is a
// client key, looked up directly, or a wider prefix (aggregate), for which the
// latest proof of any source inside it counts. A failed read proves nothing:
// the flag stays a flag.
func (d *Daemon) proofOf(p netip.Prefix) (int64, bool) {
	pol := d.CurrentPolicy()
	if pol == nil || !p.IsValid() {
		return 0, false
	}
	bits := int(pol.Spec.ClientKey.IPv6)
	if p.Addr().Is4() {
		bits = int(pol.Spec.ClientKey.IPv4)
	}
	if p.Bits() >= bits {
		key, err := p.Addr().Prefix(bits)
		if err != nil {
			return 0, false
		}
		mono, ok, err := d.dp.SourceProof(key)
		if err != nil {
			d.log.Warn("cannot read the proof of a source; it counts as unproven", "prefix", p, "err", err)
			return 0, false
		}
		return int64(mono), ok
	}
	var latest uint64
	found := false
	err := d.dp.SourceProofs(func(a netip.Addr, mono uint64) error {
		if p.Contains(a) && (!found || mono > latest) {
			latest, found = mono, true
		}
		return nil
	})
	if err != nil {
		d.log.Warn("cannot read the proven sources; the prefix counts as unproven", "prefix", p, "err", err)
		return 0, false
	}
	return int64(latest), found
}
