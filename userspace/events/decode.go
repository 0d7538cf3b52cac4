// Package events reads the datapath's ring buffer (Linux 5.8+ BPF_MAP_TYPE_RINGBUF)
// and hands its records to the rest of the daemon as loader.Event values: a
// Reader decodes them into a bounded queue for the detector, and a Hub fans them
// out to any number of slow or fast subscribers (the control API's
// `apiguard events --follow`) without ever blocking the reader.
//
// Nothing is lost silently: records that do not decode, events the queue had no
// room for and events a slow subscriber missed are all counted.
package events

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"github.com/apiguard/apiguard/loader"
)

// RecordSize is the size of one ring-buffer record: struct ag_event as bpf2go
// generated it. The offsets below come from the generated type too, so the
// decoder follows the C struct through `make generate` and never mirrors it.
const RecordSize = int(unsafe.Sizeof(loader.Event{}))

const (
	offTs       = unsafe.Offsetof(loader.Event{}.Ts)
	offAddr     = unsafe.Offsetof(loader.Event{}.Addr)
	offCount    = unsafe.Offsetof(loader.Event{}.Count)
	offService  = unsafe.Offsetof(loader.Event{}.Service)
	offDport    = unsafe.Offsetof(loader.Event{}.Dport)
	offType     = unsafe.Offsetof(loader.Event{}.Type)
	offReason   = unsafe.Offsetof(loader.Event{}.Reason)
	offFamily   = unsafe.Offsetof(loader.Event{}.Family)
	offProto    = unsafe.Offsetof(loader.Event{}.Proto)
	offTcpFlags = unsafe.Offsetof(loader.Event{}.TcpFlags)
	offAction   = unsafe.Offsetof(loader.Event{}.Action)
)

// Decoding errors. A record that fails is counted as undecodable and skipped.
var (
	ErrRecordSize = errors.New("ring-buffer record has the wrong size")
	ErrEventType  = errors.New("unknown event type")
	ErrFamily     = errors.New("address family is neither 4 nor 6")
	ErrAction     = errors.New("unknown action")
)

// numTypes bounds the event type values this build knows (1..numTypes).
var numTypes = len(loader.EventTypes())

// Decode fills ev from one raw record, in the host's byte order (the kernel
// wrote it on this machine). It checks the fields the consumers index with.
func Decode(raw []byte, ev *loader.Event) error {
	if len(raw) != RecordSize {
		return fmt.Errorf("%w: %d bytes, want %d", ErrRecordSize, len(raw), RecordSize)
	}
	ne := binary.NativeEndian
	ev.Ts = ne.Uint64(raw[offTs:])
	copy(ev.Addr[:], raw[offAddr:offAddr+16])
	ev.Count = ne.Uint64(raw[offCount:])
	ev.Service = ne.Uint32(raw[offService:])
	ev.Dport = ne.Uint16(raw[offDport:])
	ev.Type = raw[offType]
	ev.Reason = raw[offReason]
	ev.Family = raw[offFamily]
	ev.Proto = raw[offProto]
	ev.TcpFlags = raw[offTcpFlags]
	ev.Action = raw[offAction]
	ev.Pad = [4]uint8{}
	if ev.Type == 0 || int(ev.Type) > numTypes {
		return fmt.Errorf("%w %d", ErrEventType, ev.Type)
	}
	if ev.Family != 4 && ev.Family != 6 {
		return fmt.Errorf("%w: %d", ErrFamily, ev.Family)
	}
	if ev.Action > uint8(loader.ActionMonitor) {
		return fmt.Errorf("%w %d", ErrAction, ev.Action)
	}
	return nil
}

// Encode is Decode's inverse, for tests and benchmarks that need raw records
// without a kernel.
func Encode(ev *loader.Event) []byte {
	raw := make([]byte, RecordSize)
	ne := binary.NativeEndian
	ne.PutUint64(raw[offTs:], ev.Ts)
	copy(raw[offAddr:], ev.Addr[:])
	ne.PutUint64(raw[offCount:], ev.Count)
	ne.PutUint32(raw[offService:], ev.Service)
	ne.PutUint16(raw[offDport:], ev.Dport)
	raw[offType] = ev.Type
	raw[offReason] = ev.Reason
	raw[offFamily] = ev.Family
	raw[offProto] = ev.Proto
	raw[offTcpFlags] = ev.TcpFlags
	raw[offAction] = ev.Action
	return raw
}
