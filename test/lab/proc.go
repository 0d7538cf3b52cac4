package lab

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/apiguard/apiguard/test/netns"
)

// Proc is a process the lab started inside one of its namespaces.
type Proc struct {
	Name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // from Wait, once done is closed
	tail *tailBuffer
}

// procSpec says what to run and where.
type procSpec struct {
	name string
	ns   *netns.Namespace
	path string
	args []string
	env  []string
	// lines receives each line the process writes to stdout; nil discards it.
	lines func(line []byte)
	// logFile receives stderr (and stdout when lines is nil) directly: the
	// process keeps writing to it whatever the lab does. Without it, the lab
	// keeps the tail of stderr for error messages.
	logFile *os.File
}

// start runs spec.path inside spec.ns. nsenter, not `ip netns exec`: that one
// also remounts /sys in a new mount namespace, which would hide bpffs and the
// pins from the daemon. The process gets its own process group, so that a
// Ctrl-C at the terminal reaches the lab (which stops it in order) and not the
// process directly, and it is killed if the lab's process dies first.
func startProc(spec procSpec) (*Proc, error) {
	args := append([]string{"--net=/run/netns/" + spec.ns.Name, spec.path}, spec.args...)
	cmd := exec.Command("nsenter", args...)
	cmd.Env = append(os.Environ(), spec.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &Proc{Name: spec.name, cmd: cmd, done: make(chan struct{}), tail: &tailBuffer{max: 64 << 10}}
	var errOut io.Writer = p.tail
	if spec.logFile != nil {
		// The file itself, not a pipe the lab copies from: a pipe whose
		// reader went away would kill the process with SIGPIPE at its next
		// log line.
		errOut = spec.logFile
	}
	cmd.Stderr = errOut
	var stdout io.ReadCloser
	if spec.lines != nil {
		var err error
		if stdout, err = cmd.StdoutPipe(); err != nil {
			return nil, fmt.Errorf("start %s: %w", spec.name, err)
		}
	} else {
		cmd.Stdout = errOut
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.name, err)
	}
	readDone := make(chan struct{})
	if stdout != nil {
		go func() {
			defer close(readDone)
			sc := bufio.NewScanner(stdout)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				spec.lines(sc.Bytes())
			}
			_, _ = io.Copy(io.Discard, stdout) // a line over 1 MiB: keep the pipe drained
		}()
	} else {
		close(readDone)
	}
	go func() {
		<-readDone // Wait closes the pipe: read it to the end first
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// start is startProc for a process the lab stops when it closes.
func (l *Lab) start(spec procSpec) (*Proc, error) {
	p, err := startProc(spec)
	if err != nil {
		return nil, err
	}
	l.onClose(func() error { return p.Stop(5 * time.Second) })
	return p, nil
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return fmt.Errorf("%s has exited: %w", p.Name, p.exitErr())
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %s: %w", p.Name, err)
	}
	return nil
}

// Wait waits at most timeout for the process to exit and returns how it did.
func (p *Proc) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.exitErr()
	case <-time.After(timeout):
		return fmt.Errorf("%s did not exit within %v", p.Name, timeout)
	}
}

// Stop asks the process to end (SIGTERM), and kills it if it has not after
// grace. Stopping a process that already exited is not an error.
func (p *Proc) Stop(grace time.Duration) error {
	if p.Exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM) // it may exit meanwhile
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
		return fmt.Errorf("%s ignored SIGTERM for %v and was killed", p.Name, grace)
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s survived SIGKILL for 10s", p.Name)
	}
}

// Err is how the process exited: nil while it runs or after a clean exit.
func (p *Proc) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

func (p *Proc) exitErr() error {
	if p.err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w: %s", p.Name, p.err, strings.TrimSpace(p.tail.String()))
}

// Output is the tail of what the process wrote to stderr.
func (p *Proc) Output() string { return p.tail.String() }

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (t *tailBuffer) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf.Write(b)
	if over := t.buf.Len() - t.max; over > 0 {
		t.buf.Next(over)
	}
	return len(b), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.buf.String()
}

// Roles: the lab runs its own executable again (the demo program, or a test
// binary) inside a namespace, with the role and its JSON configuration in the
// environment. RunRoleIfAsked, called first thing in main or TestMain, turns
// such a process into the role and exits.
const (
	envRole   = "APIGUARD_LAB_ROLE"
	envConfig = "APIGUARD_LAB_CONFIG"
)

type roleFunc func(ctx context.Context, config []byte, out *reporter) error

var roles = map[string]roleFunc{
	"server": runServer,
	"attack": runAttack,
}

// RunRoleIfAsked returns at once in a normal run. In a process the lab started
// as one of its roles, it runs the role and exits: call it before anything
// else in main, and in TestMain of every test package that uses the lab.
func RunRoleIfAsked() {
	name := os.Getenv(envRole)
	if name == "" {
		return
	}
	role, ok := roles[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "lab: unknown role %q\n", name)
		os.Exit(2)
	}
	ctx, stop := signalContext()
	err := role(ctx, []byte(os.Getenv(envConfig)), &reporter{enc: json.NewEncoder(os.Stdout)})
	stop()
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(os.Stderr, "lab %s: %v\n", name, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// startRole runs a role in ns; each JSON line it reports goes to lines.
func (l *Lab) startRole(name string, ns *netns.Namespace, role string, config any, lines func([]byte)) (*Proc, error) {
	if _, ok := roles[role]; !ok {
		return nil, fmt.Errorf("unknown role %q", role)
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find the lab's executable: %w", err)
	}
	cfg, err := json.Marshal(config)
	if err != nil {
		return nil, fmt.Errorf("encode %s configuration: %w", role, err)
	}
	return l.start(procSpec{name: name, ns: ns, path: exe, lines: lines,
		env: []string{envRole + "=" + role, envConfig + "=" + string(cfg)}})
}

// reporter writes a role's JSON lines to its stdout.
type reporter struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (r *reporter) report(v any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	_ = r.enc.Encode(v) // the lab stopped reading: nothing left to tell
}
