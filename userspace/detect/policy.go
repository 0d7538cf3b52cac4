package detect

import (
	"time"

	"github.com/apiguard/apiguard/userspace/policy"
)

// FromPolicy is the detector's configuration for a validated policy:
// spec.detection and spec.bans, the policy's monitor mode and its key lengths.
// eventInterval is the datapath's (loader.Options.EventInterval; 0 for its
// default). Memory caps keep DefaultConfig's values.
func FromPolicy(spec *policy.Spec, eventInterval time.Duration) Config {
	d := &spec.Detection
	rule := func(r policy.Detector) Rule {
		return Rule{Enabled: r.Enabled, Action: Action(r.Action), Window: r.Window, BanUnproven: r.BanUnproven}
	}
	cfg := DefaultConfig()
	cfg.Flood = FloodRule{Rule: rule(d.Flood.Detector), LimitedFor: d.Flood.LimitedFor}
	cfg.SYNFlood = SYNFloodRule{Rule: rule(d.SYNFlood.Detector), SYNs: d.SYNFlood.SYNs}
	// a threshold above the number of ports can never be passed; say so
	// rather than refuse a policy that validated
	cfg.Scan = ScanRule{Rule: rule(d.Scan.Detector), Ports: min(d.Scan.Ports, maxScanPorts-1)}
	cfg.DenyProbe = DenyProbeRule{Rule: rule(d.DenyProbe.Detector), Hits: d.DenyProbe.Hits}
	cfg.BadFlags = BadFlagsRule{Rule: rule(d.BadFlags.Detector), Packets: d.BadFlags.Packets}
	cfg.Aggregate = AggregateRule{Rule: rule(d.Aggregate.Detector), Share: d.Aggregate.Share,
		MinClients: d.Aggregate.MinClients, MinEvents: d.Aggregate.MinEvents}
	cfg.API.AuthFailures = AuthFailuresRule{Rule: rule(d.AuthFailures.Detector), Failures: d.AuthFailures.Failures, LoginPaths: d.AuthFailures.LoginPaths}
	cfg.API.Enumeration = EnumerationRule{Rule: rule(d.Enumeration.Detector), Objects: d.Enumeration.Objects,
		Templates: d.Enumeration.Templates, Learn: d.Enumeration.Learn}
	cfg.API.AppThrottled = CountRule{Rule: rule(d.AppThrottled.Detector), Responses: d.AppThrottled.Responses}
	cfg.API.ErrorBurst = CountRule{Rule: rule(d.ErrorBurst.Detector), Responses: d.ErrorBurst.Responses}
	cfg.API.InjectionProbe = InjectionRule{Rule: rule(d.InjectionProbe.Detector), Requests: d.InjectionProbe.Requests}
	cfg.API.SensitiveFiles = SensitiveFilesRule{Rule: rule(d.SensitiveFiles.Detector), Requests: d.SensitiveFiles.Requests,
		Paths: d.SensitiveFiles.Paths, Defaults: d.SensitiveFiles.Defaults}
	cfg.API.ScannerAgent = ScannerAgentRule{Rule: rule(d.ScannerAgent.Detector), Requests: d.ScannerAgent.Requests,
		Agents: d.ScannerAgent.Agents, Defaults: d.ScannerAgent.Defaults}
	cfg.Bans = BanPolicy{TTL: spec.Bans.TTL, MaxTTL: spec.Bans.MaxTTL, Growth: spec.Bans.Growth, ForgetAfter: spec.Bans.ForgetAfter,
		ProofTTL: spec.Bans.ProofTTL, MaxPerMinute: int(min(spec.Bans.MaxPerMinute, maxBansPerMinute))}
	cfg.Monitor = spec.Mode == policy.Monitor
	cfg.ClientBits4, cfg.ClientBits6 = spec.ClientKey.IPv4, spec.ClientKey.IPv6
	cfg.PrefixBits4, cfg.PrefixBits6 = spec.PrefixKey.IPv4, spec.PrefixKey.IPv6
	if eventInterval > 0 {
		cfg.EventInterval = eventInterval
	}
	return cfg
}
