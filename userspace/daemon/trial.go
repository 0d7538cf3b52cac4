package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/apiguard/apiguard/userspace/control"
	"github.com/apiguard/apiguard/userspace/policy"
)

// Never locking the operator out: a policy applied over the control socket
// is checked against the flows the caller must keep (its own SSH session,
// found by the CLI) and the host's default gateways, and may be put on
// trial (policy apply --confirm): unless confirmed in time, the policy in
// force before comes back by itself, like a router's commit confirmed.
//
// A restart applies the --policy file, as it always does, and a stop brings
// back the policy before the trial: a policy on trial never outlives the
// daemon (only a kill -9 or a crash leaves it in the kernel, until systemd's
// restart applies the --policy file). The state directory remembers the trial so
// that the next run says what became of it.

// trial is the policy on trial.
type trial struct {
	name     string
	deadline time.Time
	// prev comes back unless the trial is confirmed: the last policy not on
	// trial (a second trial before the first is confirmed keeps it).
	prev  *parsedPolicy
	timer *time.Timer
	seq   uint64
}

// savedTrial is the trial as the state directory keeps it.
type savedTrial struct {
	Policy   string    `json:"policy"`
	Deadline time.Time `json:"deadline"`
	RevertTo string    `json:"revert_to"`
}

const trialStateFile = "trial.json"

// checkLockout refuses a policy that would drop one of the caller's flows
// or a default gateway, unless force. It returns what it checked and kept,
// and what force let the policy drop.
func (d *Daemon) checkLockout(pol *policy.Policy, protect []control.Flow, force bool) (kept, forced []string, err error) {
	var cut []string
	check := func(what string, src netip.Addr, proto policy.Protocol, port uint16) {
		if why, drops := pol.Drops(src, proto, port); drops {
			cut = append(cut, fmt.Sprintf("%s: %s", what, why))
		} else {
			kept = append(kept, what)
		}
	}
	for _, f := range protect {
		src, perr := netip.ParseAddr(f.Src)
		if perr != nil {
			return nil, nil, control.Invalidf("protect: %q is not an address", f.Src)
		}
		check(fmt.Sprintf("%s (%s to %s port %d)", f.What, src, f.Proto, f.Port), src, policy.Protocol(f.Proto), f.Port)
	}
	gws, gerr := defaultGateways()
	if gerr != nil {
		// unknown gateways are not a reason to refuse: the caller's own flows are checked
		d.log.Warn("lockout check: cannot list the default gateways", "err", gerr)
	}
	for _, g := range gws {
		check("the default gateway "+g.prefix.Addr().String(), g.prefix.Addr(), policy.TCP, 0)
	}
	if len(cut) == 0 {
		return kept, nil, nil
	}
	if !force {
		return kept, nil, control.Refusedf("policy %s would drop %s; the policy in force stays. --force applies it anyway (with --confirm 60s it comes back unless confirmed)",
			pol.Name, strings.Join(cut, "; "))
	}
	d.log.Warn("policy applied with --force although it drops flows the caller must keep", "policy", pol.Name, "drops", strings.Join(cut, "; "))
	return kept, cut, nil
}

// applyUpload is ApplyPolicy's work: check, apply, and start, replace or end
// a trial. trialMu is held throughout, so a trial's timer cannot revert
// in the middle of an apply.
func (d *Daemon) applyUpload(p *parsedPolicy, up *control.PolicyUpload) (*control.ApplyResult, error) {
	within, err := up.ConfirmWithin()
	if err != nil {
		return nil, err
	}
	kept, forced, err := d.checkLockout(p.pol, up.Protect, up.Force)
	if err != nil {
		return nil, err
	}
	d.trialMu.Lock()
	defer d.trialMu.Unlock()
	prev := d.currentParsed()
	if d.trial != nil {
		prev = d.trial.prev
	}
	res, err := d.apply(p, "api")
	if err != nil {
		return nil, err
	}
	res.Kept, res.Forced = kept, forced
	if within == 0 {
		if d.trial != nil {
			d.log.Info("a policy applied without --confirm ends the trial", "on_trial", d.trial.name, "applied", p.pol.Name)
			d.endTrialLocked()
		}
		return res, nil
	}
	if prev == nil {
		return res, nil // nothing to come back to (cannot happen: a policy is applied at start)
	}
	if d.trial != nil {
		d.trial.timer.Stop()
	}
	d.trialSeq++
	seq := d.trialSeq
	t := &trial{name: p.pol.Name, deadline: time.Now().Add(within), prev: prev, seq: seq}
	t.timer = time.AfterFunc(within, func() { d.revertTrial(seq) })
	d.trial = t
	d.trialNote = ""
	if err := writeJSONFile(filepath.Join(d.cfg.StateDir, trialStateFile), savedTrial{Policy: t.name, Deadline: t.deadline, RevertTo: prev.pol.Name}); err != nil {
		d.log.Warn("could not record the trial in the state directory", "err", err)
	}
	d.log.Warn("policy on trial: it reverts unless confirmed (apiguard policy confirm)", "policy", t.name, "deadline", t.deadline, "revert_to", prev.pol.Name)
	by := t.deadline
	res.ConfirmBy = &by
	return res, nil
}

// currentParsed is the policy in force as an apply takes it.
func (d *Daemon) currentParsed() *parsedPolicy {
	d.polMu.Lock()
	defer d.polMu.Unlock()
	if d.pol == nil {
		return nil
	}
	return &parsedPolicy{pol: d.pol.pol, path: d.pol.path, source: d.pol.source}
}

// revertTrial brings back the policy the trial replaced, unless the trial
// was confirmed or replaced meanwhile.
func (d *Daemon) revertTrial(seq uint64) {
	d.trialMu.Lock()
	defer d.trialMu.Unlock()
	t := d.trial
	if t == nil || t.seq != seq {
		return
	}
	d.endTrialLocked()
	if _, err := d.apply(t.prev, "confirm-timeout"); err != nil {
		d.trialNote = fmt.Sprintf("policy %q was not confirmed by %s, and bringing back %q failed: %v", t.name, t.deadline.Format(time.RFC3339), t.prev.pol.Name, err)
		d.log.Error("policy on trial not confirmed; reverting failed", "policy", t.name, "revert_to", t.prev.pol.Name, "err", err)
		return
	}
	d.trialNote = fmt.Sprintf("policy %q was not confirmed by %s: %q is back in force", t.name, t.deadline.Format(time.RFC3339), t.prev.pol.Name)
	d.log.Warn("policy on trial not confirmed in time: reverted", "policy", t.name, "revert_to", t.prev.pol.Name)
}

// revertTrialOnStop brings back the policy a trial replaced when the daemon
// stops: the pinned datapath enforces whatever is in force while no daemon
// runs (after a stop, or a start that fails on a broken --policy file), and
// a policy nobody confirmed must not stay there with no timer to revert it.
// The trial's record stays, so that the next start says what became of it.
func (d *Daemon) revertTrialOnStop() {
	d.trialMu.Lock()
	defer d.trialMu.Unlock()
	t := d.trial
	if t == nil {
		return
	}
	t.timer.Stop()
	d.trial = nil
	if _, err := d.apply(t.prev, "stop"); err != nil {
		d.log.Error("the daemon stops with a policy on trial, and bringing back the policy before it failed: the policy on trial stays in the kernel until the next start",
			"policy", t.name, "revert_to", t.prev.pol.Name, "err", err)
		return
	}
	d.log.Warn("the daemon stops with a policy on trial: the policy before it is back in force", "policy", t.name, "revert_to", t.prev.pol.Name)
}

// endTrialLocked forgets the trial: its timer stops and its record goes.
func (d *Daemon) endTrialLocked() {
	if d.trial == nil {
		return
	}
	d.trial.timer.Stop()
	d.trial = nil
	if err := os.Remove(filepath.Join(d.cfg.StateDir, trialStateFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		d.log.Warn("could not remove the trial's record", "err", err)
	}
}

// applyFile applies the --policy file (SIGHUP), which ends any trial: under
// trialMu, so that a trial's timer cannot bring its policy back over it.
func (d *Daemon) applyFile(p *parsedPolicy, why string) error {
	d.trialMu.Lock()
	defer d.trialMu.Unlock()
	if _, err := d.apply(p, strings.ToLower(why)); err != nil {
		return err
	}
	if d.trial != nil {
		d.trialNote = fmt.Sprintf("policy %q was on trial when %s applied the --policy file", d.trial.name, why)
		d.log.Info("the policy on trial ends: the --policy file is in force", "on_trial", d.trial.name, "why", why)
		d.endTrialLocked()
	}
	return nil
}

// ConfirmPolicy keeps the policy on trial.
func (d *Daemon) ConfirmPolicy(context.Context) (*control.ConfirmResult, error) {
	d.trialMu.Lock()
	defer d.trialMu.Unlock()
	if d.trial == nil {
		msg := "no policy is on trial"
		if d.trialNote != "" {
			msg += ": " + d.trialNote
		}
		return nil, control.NotFoundf("%s", msg)
	}
	name := d.trial.name
	d.endTrialLocked()
	d.trialNote = ""
	d.log.Info("policy on trial confirmed", "policy", name)
	res := &control.ConfirmResult{Policy: name}
	d.polMu.Lock()
	if d.pol != nil {
		res.Generation = d.pol.generation
	}
	d.polMu.Unlock()
	return res, nil
}

// pendingConfirm is the trial for status.
func (d *Daemon) pendingConfirm() *control.PendingConfirm {
	d.trialMu.Lock()
	defer d.trialMu.Unlock()
	if d.trial == nil {
		return nil
	}
	return &control.PendingConfirm{Policy: d.trial.name, Deadline: d.trial.deadline, RevertTo: d.trial.prev.pol.Name}
}

// trialWarning is what status says of the last trial's end, if anything.
func (d *Daemon) trialWarning() string {
	d.trialMu.Lock()
	defer d.trialMu.Unlock()
	return d.trialNote
}

// forgetOldTrial reads what an earlier run left on trial: the --policy file
// is in force now, and status says so until the next trial.
func (d *Daemon) forgetOldTrial() {
	path := filepath.Join(d.cfg.StateDir, trialStateFile)
	var st savedTrial
	found, err := readJSONFile(path, &st)
	if err != nil {
		d.log.Warn("ignoring the trial's record", "file", path, "err", err)
	}
	if !found {
		return
	}
	d.trialNote = fmt.Sprintf("policy %q was on trial (until %s) when the daemon stopped; the --policy file is in force", st.Policy, st.Deadline.Format(time.RFC3339))
	d.log.Warn("a policy on trial did not outlive the daemon; the --policy file is in force", "on_trial", st.Policy, "deadline", st.Deadline)
	if err := os.Remove(path); err != nil {
		d.log.Warn("could not remove the trial's record", "err", err)
	}
}
