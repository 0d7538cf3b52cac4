package e2e

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apiguard/apiguard/test/lab"
	"github.com/apiguard/apiguard/test/promcheck"
	"github.com/apiguard/apiguard/test/testenv"
	"github.com/apiguard/apiguard/userspace/control"
)

const detectPort = 9001

const detectionPolicy = `apiVersion: apiguard.io/v1
kind: Policy
metadata: {name: detection-e2e}
spec:
  services:
    - name: lab
      protocol: udp
      ports: [9001]
      limits:
        client:
          packets: {rate: 200/s, burst: 200}
    - name: api
      protocol: tcp
      ports: [9443]
  detection:
    flood: {window: 30s, limitedFor: 3s, action: ban}
    scan: {window: 10s, ports: 20, action: ban}
  bans: {ttl: 1m}
`

// sourceCounter counts the datagrams that reach the guarded side, per source.
type sourceCounter struct {
	mu sync.Mutex
	n  map[netip.Addr]int
}

func (c *sourceCounter) get(a netip.Addr) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[a]
}

func (e *env) countBySource(t *testing.T) *sourceCounter {
	t.Helper()
	c := &sourceCounter{n: map[netip.Addr]int{}}
	var conn *net.UDPConn
	err := e.pair.guarded.Do(func() error {
		var err error
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: e.pair.guardEnd.Addr4.AsSlice(), Port: detectPort})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			_, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.mu.Lock()
			c.n[from.Addr().Unmap()]++
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return c
}

// peerAddr adds another address to the peer's end and returns it.
func (e *env) peerAddr(t testing.TB, last byte) netip.Addr {
	t.Helper()
	a := netip.AddrFrom4([4]byte{10, 61, 0, last})
	if err := e.pair.peer.IP("addr", "add", a.String()+"/24", "dev", e.pair.peerEnd.Name); err != nil {
		t.Fatal(err)
	}
	return a
}

// udpFrom is a UDP socket in the peer namespace bound to src.
func (e *env) udpFrom(t *testing.T, src netip.Addr) *net.UDPConn {
	t.Helper()
	var conn *net.UDPConn
	err := e.pair.peer.Do(func() error {
		var err error
		conn, err = net.DialUDP("udp4", &net.UDPAddr{IP: src.AsSlice()}, &net.UDPAddr{IP: e.pair.guardEnd.Addr4.AsSlice(), Port: detectPort})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// scrape reads /metrics from the daemon's default address inside the
// guarded namespace.
func (e *env) scrape(t *testing.T) []byte {
	t.Helper()
	code, body := e.get(t, "/metrics")
	if code != 200 {
		t.Fatalf("scrape answered %d: %s", code, body)
	}
	return body
}

// metric finds one sample's value in an exposition.
func metric(body []byte, series string) (float64, bool) {
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

// proveFrom completes a TCP handshake from src with a listener of the api
// service on the guarded side, which then closes: the server's answers on
// that connection prove src (bpf/include/proof.h), so packet evidence about
// it may ban it.
func (e *env) proveFrom(t *testing.T, src netip.Addr) {
	t.Helper()
	var ln net.Listener
	err := e.pair.guarded.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(e.pair.guardEnd.Addr4, 9443).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, c) // until the client's FIN
		c.Close()
	}()
	err = e.pair.peer.Do(func() error {
		dialer := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}, Timeout: 2 * time.Second}
		c, err := dialer.Dial("tcp4", ln.Addr().String())
		if err != nil {
			return err
		}
		return c.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
	<-accepted
}

func (e *env) flagFor(t *testing.T, subject string, reason string) *control.Flag {
	t.Helper()
	var flags []control.Flag
	e.jsonCLI(&flags, "clients", "flagged")
	for _, f := range flags {
		if f.Subject() == subject && string(f.Reason) == reason {
			return &f
		}
	}
	return nil
}

// TestDetectionEndToEnd: a UDP flood is flagged "flood" and banned, a SYN scan
// is flagged "scan" and banned (both from sources that completed a TCP
// handshake with the host before: packet evidence bans only such sources), a
// client below its limits sending all along is never flagged and loses
// nothing; the CLI shows flags, bans and events, and /metrics (checked by
// promtool) counts them.
func TestDetectionEndToEnd(t *testing.T) {
	testenv.RequireRoot(t)
	e := newEnv(t)
	counts := e.countBySource(t)
	flooder := e.pair.peerEnd.Addr4
	legit := e.peerAddr(t, 3)
	scanner := e.peerAddr(t, 4)
	d := e.startDaemon(e.write("detect.yaml", detectionPolicy))
	e.proveFrom(t, flooder)
	e.proveFrom(t, scanner)

	// the legitimate client: 50 datagrams a second, all through the test
	legitConn := e.udpFrom(t, legit)
	stopLegit := make(chan struct{})
	legitDone := make(chan int)
	go func() {
		sent := 0
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopLegit:
				legitDone <- sent
				return
			case <-tick.C:
			}
			for range 5 {
				if _, err := legitConn.Write([]byte("legit")); err == nil {
					sent++
				}
			}
		}
	}()

	// the flood: about 2000 datagrams a second, ten times its limit, until
	// the detector bans it (bounded at 20 s)
	// (sent from its own goroutine: the flag polls below run the CLI, which
	// a slow machine must not let slow the flood down to its limit)
	floodConn := e.udpFrom(t, flooder)
	stopFlood, floodDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(floodDone)
		payload := make([]byte, 64)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopFlood:
				return
			case <-tick.C:
			}
			for range 20 {
				floodConn.Write(payload) // a send error is a drop like any other here
			}
		}
	}()
	var flag *control.Flag
	for start := time.Now(); time.Since(start) < 20*time.Second; time.Sleep(200 * time.Millisecond) {
		if flag = e.flagFor(t, flooder.String(), "flood"); flag != nil && flag.Ban.Banned {
			break
		}
	}
	close(stopFlood)
	<-floodDone
	if flag == nil || !flag.Ban.Banned {
		t.Fatalf("the flood was not flagged and banned within 20s: %+v\n%s", flag, d.logText())
	}
	if flag.Evidence.Kernel != "client_pps" || flag.Evidence.Drops == 0 || flag.Ban.TTL != time.Minute || !flag.Proven {
		t.Errorf("flood flag %+v", flag)
	}
	var bans []control.Ban
	e.jsonCLI(&bans, "ban", "ls")
	found := false
	for _, b := range bans {
		if b.Prefix == flooder.String()+"/32" {
			found = b.Source == "detector" && strings.HasPrefix(b.Reason, "flood: ") && b.Expires != nil
		}
	}
	if !found {
		t.Errorf("ban ls does not show the detector's ban on %s: %+v", flooder, bans)
	}
	// banned: the next datagrams are dropped for the ban, before any limit
	before := e.dropped("ban")
	for range 20 {
		floodConn.Write(make([]byte, 64))
	}
	if !lab.WaitFor(5*time.Second, func() bool { return e.dropped("ban") >= before+20 }) {
		t.Errorf("the banned flooder's datagrams were not dropped as banned")
	}

	// a SYN scan of 40 closed ports
	err := e.pair.peer.Do(func() error {
		dialer := net.Dialer{LocalAddr: &net.TCPAddr{IP: scanner.AsSlice()}, Timeout: time.Second}
		for p := 20000; p < 20040; p++ {
			c, err := dialer.Dial("tcp4", netip.AddrPortFrom(e.pair.guardEnd.Addr4, uint16(p)).String())
			if err == nil {
				c.Close()
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var scan *control.Flag
	lab.WaitFor(10*time.Second, func() bool { scan = e.flagFor(t, scanner.String(), "scan"); return scan != nil })
	if scan == nil || !scan.Ban.Banned || scan.Evidence.Ports <= 20 {
		t.Fatalf("the scan was not flagged and banned: %+v\n%s", scan, d.logText())
	}

	close(stopLegit)
	sent := <-legitDone
	if !lab.WaitFor(5*time.Second, func() bool { return counts.get(legit) >= sent }) {
		t.Errorf("the legitimate client lost datagrams: %d of %d arrived", counts.get(legit), sent)
	}
	var flags []control.Flag
	e.jsonCLI(&flags, "clients", "flagged")
	for _, f := range flags {
		if f.Prefix.IsValid() && f.Prefix.Contains(legit) {
			t.Errorf("the legitimate client was flagged: %+v", f)
		}
	}
	text := e.mustCLI("clients", "flagged")
	if !strings.Contains(text, flooder.String()) || !strings.Contains(text, scanner.String()) || !strings.Contains(text, "banned 1m0s") {
		t.Errorf("clients flagged:\n%s", text)
	}

	// the events behind it, as NDJSON
	out := e.mustCLI("events", "-n", "1000", "-o", "json")
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var ev control.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("events line %q: %v", line, err)
		}
		seen[ev.Type+" "+ev.Client] = true
	}
	for _, want := range []string{"limited " + flooder.String(), "ban_hit " + flooder.String(), "no_service " + scanner.String()} {
		if !seen[want] {
			t.Errorf("events lack %q", want)
		}
	}

	// and the metrics
	body := e.scrape(t)
	for series, atLeast := range map[string]float64{
		`apiguard_clients_flagged_total{reason="flood"}`:                           1,
		`apiguard_clients_flagged_total{reason="scan"}`:                            1,
		`apiguard_bans_total{source="detector"}`:                                   2,
		`apiguard_bans_active`:                                                     2,
		`apiguard_events_total{type="limited"}`:                                    1,
		`apiguard_events_total{type="no_service"}`:                                 21,
		`apiguard_packets_total{action="drop",reason="client_pps"}`:                1,
		`apiguard_attach_info{iface="` + e.pair.guardEnd.Name + `",mode="native"}`: 1,
		`apiguard_policy_generation`:                                               1,
	} {
		v, ok := metric(body, series)
		if !ok || v < atLeast {
			t.Errorf("%s = %v (present %v), want at least %v", series, v, ok, atLeast)
		}
	}
	if v, _ := metric(body, `apiguard_events_lost_total{stage="queue"}`); v != 0 {
		t.Errorf("events lost in the daemon's queue: %v", v)
	}
	promcheck.Metrics(t, body)
}
