package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/apiguard/apiguard/loader"
	"github.com/apiguard/apiguard/userspace/control"
	"github.com/apiguard/apiguard/userspace/policy"
)

// policyState is the policy in force and where it came from.
type policyState struct {
	pol        *policy.Policy
	compiled   *loader.Policy
	path       string // the file, or the name given with an upload
	source     []byte
	generation uint32
	appliedAt  time.Time
}

// parsedPolicy is a valid policy that has not been applied yet.
type parsedPolicy struct {
	pol    *policy.Policy
	path   string
	source []byte
}

// savedPolicy is what the state directory remembers of the last applied
// policy: its compiled form keeps service ids stable across restarts.
type savedPolicy struct {
	Name       string         `json:"name"`
	Path       string         `json:"path"`
	Generation uint32         `json:"generation"`
	AppliedAt  time.Time      `json:"applied_at"`
	Compiled   *loader.Policy `json:"compiled"`
}

const policyStateFile = "policy.json"

// PolicyErrors turns policy validation errors into the control API's problem
// list, which prints as "file:line: field: message" lines. Other errors are
// returned unchanged.
func PolicyErrors(err error) error {
	var pes policy.Errors
	if !errors.As(err, &pes) {
		return err
	}
	out := &control.PolicyError{Problems: make([]control.Problem, 0, len(pes))}
	for _, e := range pes {
		out.Problems = append(out.Problems, control.Problem{File: e.File, Line: e.Line, Field: e.Field, Message: e.Msg})
	}
	return out
}

// readPolicyFile reads and validates the --policy file.
func (d *Daemon) readPolicyFile() (*parsedPolicy, error) {
	path := d.cfg.PolicyPath
	data, err := policy.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pol, err := policy.Parse(path, data, policy.ListReader(filepath.Dir(path)))
	if err != nil {
		return nil, PolicyErrors(err)
	}
	return &parsedPolicy{pol: pol, path: path, source: data}, nil
}

// parseUpload validates a policy sent over the control socket. The list files
// it names are read from the upload, never from the daemon's file system: the
// caller may not be able to read those.
func parseUpload(up *control.PolicyUpload) (*parsedPolicy, error) {
	pol, err := policy.Parse(up.Name, []byte(up.Source), func(p string) ([]byte, error) {
		data, ok := up.Files[p]
		if !ok {
			return nil, fmt.Errorf("%s was not sent with the policy (the CLI could not read it)", p)
		}
		return []byte(data), nil
	})
	if err != nil {
		return nil, PolicyErrors(err)
	}
	return &parsedPolicy{pol: pol, path: up.Name, source: []byte(up.Source)}, nil
}

// apply makes p the policy in force, then gives the detector its settings. On
// any error the policy in force stays.
func (d *Daemon) apply(p *parsedPolicy, why string) (*control.ApplyResult, error) {
	res, err := d.applyPolicy(p, why)
	if err == nil {
		d.setAPIWindows(&p.pol.Spec.Detection)
		// after polMu is released: the detector takes polMu under its own lock
		d.configureDetector()
		d.configureCrowdSec()
		d.configureNeverBan()
	}
	return res, err
}

func (d *Daemon) applyPolicy(p *parsedPolicy, why string) (*control.ApplyResult, error) {
	d.polMu.Lock()
	defer d.polMu.Unlock()
	var prev *loader.Policy
	var old *policy.Policy
	if d.pol != nil {
		prev, old = d.pol.compiled, d.pol.pol
	} else if d.saved != nil {
		prev = d.saved.Compiled
	}
	compiled, err := p.pol.Compile(prev)
	if err != nil {
		return nil, fmt.Errorf("compile policy %s: %w", p.path, PolicyErrors(err))
	}
	if err := d.prepareSynProxy(compiled); err != nil {
		return nil, fmt.Errorf("policy %s (the policy in force stays): %w", p.path, err)
	}
	res, err := d.dp.Apply(compiled)
	if err != nil {
		// not the policy's fault: the kernel refused a write (health.go)
		d.applyErr = err
		return nil, fmt.Errorf("apply policy %s (the policy in force stays): %w", p.path, err)
	}
	d.applyErr = nil
	var changes []string
	if old != nil {
		changes = policy.Diff(old, p.pol)
	}
	// detection and ban settings live in the daemon, not the kernel
	changed := res.Changed || len(changes) > 0
	appliedAt := time.Now()
	if !changed {
		if d.pol != nil {
			appliedAt = d.pol.appliedAt
		} else if d.saved != nil && d.saved.Generation == res.Generation && !d.saved.AppliedAt.IsZero() {
			// a restart that found this very policy in force
			appliedAt = d.saved.AppliedAt
		}
	}
	d.pol = &policyState{pol: p.pol, compiled: compiled, path: p.path, source: p.source, generation: res.Generation, appliedAt: appliedAt}
	for _, w := range p.pol.Warnings {
		d.log.Warn("policy warning", "problem", w.Error())
	}
	msg := "policy applied"
	if !changed {
		msg = "policy already in force"
	}
	d.log.Info(msg, "why", why, "name", p.pol.Name, "file", p.path, "generation", res.Generation,
		"kernel_changed", res.Changed, "changes", len(changes), "took", res.Took)
	// a 100k-line deny list would flood the log: the diff endpoint has them all
	const logChanges = 20
	for _, c := range changes[:min(len(changes), logChanges)] {
		d.log.Info("policy change", "change", c)
	}
	if len(changes) > logChanges {
		d.log.Info("policy changes not logged", "more", len(changes)-logChanges)
	}
	// the saved form of a large policy runs to megabytes: write it only when
	// it would say something new
	if changed || d.saved == nil || d.saved.Generation != res.Generation || d.saved.Name != p.pol.Name || d.saved.Path != p.path {
		sp := &savedPolicy{Name: p.pol.Name, Path: p.path, Generation: res.Generation, AppliedAt: appliedAt, Compiled: compiled}
		if err := writeJSONFile(filepath.Join(d.cfg.StateDir, policyStateFile), sp); err != nil {
			// the policy is in force; only the next restart's service ids may shift
			d.log.Warn("could not save the applied policy to the state directory", "err", err)
		} else {
			d.saved = sp
		}
	}
	warnings := make([]string, 0, len(p.pol.Warnings))
	for _, w := range p.pol.Warnings {
		warnings = append(warnings, w.Error())
	}
	return &control.ApplyResult{
		Name:          p.pol.Name,
		Generation:    res.Generation,
		Changed:       changed,
		KernelChanged: res.Changed,
		Changes:       changes,
		Warnings:      warnings,
		PrefixWrites:  res.PrefixWrites,
		PortWrites:    res.PortWrites,
		ServiceWrites: res.ServiceWrites,
		TookSeconds:   res.Took.Seconds(),
	}, nil
}

// loadSavedPolicy reads what an earlier run applied. A missing or unreadable
// state file only costs stable service ids, so it is a warning.
func (d *Daemon) loadSavedPolicy() {
	var sp savedPolicy
	path := filepath.Join(d.cfg.StateDir, policyStateFile)
	found, err := readJSONFile(path, &sp)
	switch {
	case err != nil:
		d.log.Warn("ignoring the saved policy state", "file", path, "err", err)
	case found:
		d.saved = &sp
	}
}

// reloadOnHangup re-reads the --policy file on every SIGHUP. A bad file is
// logged and the policy in force stays.
func (d *Daemon) reloadOnHangup(ctx context.Context, hup <-chan os.Signal) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
		}
		d.log.Info("SIGHUP: reloading the policy", "file", d.cfg.PolicyPath)
		p, err := d.readPolicyFile()
		if err == nil {
			err = d.applyFile(p, "SIGHUP")
		}
		if err != nil {
			d.logPolicyRefusal(d.cfg.PolicyPath, err)
		}
	}
}

func (d *Daemon) logPolicyRefusal(file string, err error) {
	d.tel.reloadErrors.Add(1)
	var pe *control.PolicyError
	if errors.As(err, &pe) {
		d.log.Error("policy refused; the policy in force stays", "file", file, "errors", len(pe.Problems))
		for _, p := range pe.Problems {
			d.log.Error("policy problem", "problem", p.String())
		}
		return
	}
	d.log.Error("policy refused; the policy in force stays", "file", file, "err", err)
}

// CurrentPolicy is the policy in force (nil before the first apply), for
// components that read its detection and ban settings. Callers must not
// modify it; a new policy replaces it whole.
func (d *Daemon) CurrentPolicy() *policy.Policy {
	d.polMu.Lock()
	defer d.polMu.Unlock()
	if d.pol == nil {
		return nil
	}
	return d.pol.pol
}

// IsAllowed reports whether the policy in force allow-lists addr: such a
// client passes before bans are checked and must never be banned.
func (d *Daemon) IsAllowed(addr netip.Addr) bool {
	_, ok := d.allowCovering(netip.PrefixFrom(addr.Unmap(), addr.Unmap().BitLen()))
	return ok
}
