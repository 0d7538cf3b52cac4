package events

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/apiguard/apiguard/loader"
)

// The decoder must read exactly what binary.Read reads into the generated type:
// this pins the offsets to bpf2go's layout without mirroring it.
func TestDecodeMatchesBinaryRead(t *testing.T) {
	if RecordSize != binary.Size(loader.Event{}) {
		t.Fatalf("RecordSize %d, binary.Size %d", RecordSize, binary.Size(loader.Event{}))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 1000; i++ {
		raw := make([]byte, RecordSize)
		for j := range raw {
			raw[j] = byte(rng.Uint32())
		}
		// make the checked fields valid; everything else stays random
		raw[offType] = byte(1 + rng.IntN(numTypes))
		raw[offFamily] = []byte{4, 6}[rng.IntN(2)]
		raw[offAction] = byte(rng.IntN(3))

		var want loader.Event
		if err := binary.Read(bytes.NewReader(raw), binary.NativeEndian, &want); err != nil {
			t.Fatal(err)
		}
		want.Pad = [4]uint8{}
		var got loader.Event
		if err := Decode(raw, &got); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if got != want {
			t.Fatalf("record %d:\n got %+v\nwant %+v", i, got, want)
		}
		if back := Encode(&got); !bytes.Equal(back[:offAction+1], raw[:offAction+1]) {
			t.Fatalf("record %d: Encode does not invert Decode", i)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	good := loader.Event{Ts: 1, Type: uint8(loader.GuardAgEventTypeAG_EV_DENY_HIT), Family: 4, Action: uint8(loader.ActionDrop)}
	cases := []struct {
		name string
		raw  func() []byte
		want error
	}{
		{"short", func() []byte { return Encode(&good)[:RecordSize-1] }, ErrRecordSize},
		{"long", func() []byte { return append(Encode(&good), 0, 0, 0, 0, 0, 0, 0, 0) }, ErrRecordSize},
		{"type zero", func() []byte { e := good; e.Type = 0; return Encode(&e) }, ErrEventType},
		{"type unknown", func() []byte { e := good; e.Type = uint8(numTypes + 1); return Encode(&e) }, ErrEventType},
		{"family", func() []byte { e := good; e.Family = 5; return Encode(&e) }, ErrFamily},
		{"action", func() []byte { e := good; e.Action = 7; return Encode(&e) }, ErrAction},
	}
	for _, c := range cases {
		var ev loader.Event
		if err := Decode(c.raw(), &ev); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	var ev loader.Event
	if err := Decode(Encode(&good), &ev); err != nil || ev != good {
		t.Fatalf("valid record: %v %+v", err, ev)
	}
}

func TestDescribe(t *testing.T) {
	ev := loader.Event{
		Ts:       5e9,
		Addr:     netip.MustParseAddr("::ffff:192.0.2.7").As16(),
		Count:    42,
		Service:  3,
		Dport:    443,
		Type:     uint8(loader.GuardAgEventTypeAG_EV_LIMITED),
		Reason:   uint8(loader.GuardAgReasonAG_R_CLIENT_PPS),
		Family:   4,
		Proto:    loader.ProtoTCP,
		TcpFlags: 0x12,
		Action:   uint8(loader.ActionDrop),
	}
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	in := Describe(&ev, func(mono uint64) time.Time { return base.Add(time.Duration(mono)) })
	want := Info{
		Time: base.Add(5 * time.Second), Type: "limited", Reason: "client_pps", Action: "drop",
		Client: "192.0.2.7", Service: 3, Proto: "tcp", Port: 443, TCPFlags: "SYN|ACK", Count: 42,
	}
	if in != want {
		t.Fatalf("got %+v\nwant %+v", in, want)
	}
	svc := ev
	svc.Addr = [16]byte{}
	if got := Describe(&svc, func(uint64) time.Time { return base }).Client; got != "0.0.0.0" {
		t.Fatalf("service-total event client %q", got)
	}
	svc.Family = 6
	if got := Describe(&svc, func(uint64) time.Time { return base }).Client; got != "::" {
		t.Fatalf("IPv6 service-total event client %q", got)
	}
	if TCPFlagString(0) != "NULL" || TCPFlagString(0x29) != "FIN|PSH|URG" {
		t.Fatalf("flag names: %q %q", TCPFlagString(0), TCPFlagString(0x29))
	}
}
