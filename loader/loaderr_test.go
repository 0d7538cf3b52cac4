package loader

import (
	"errors"
	"strings"
	"testing"

	"github.com/apiguard/apiguard/test/testenv"
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// A program the verifier rejects comes back as a wrapped VerifierError whose
// message keeps the end of the log, where the reason is.
func TestVerifierErrorTrimmedAndWrapped(t *testing.T) {
	testenv.RequireRoot(t)
	// reads an uninitialised register: the verifier's reason is on the last lines
	var insns asm.Instructions
	for i := 0; i < 40; i++ {
		insns = append(insns, asm.Mov.Imm(asm.R0, int32(i)))
	}
	insns = append(insns, asm.Mov.Reg(asm.R0, asm.R5), asm.Return())
	_, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: insns})
	if err == nil {
		t.Fatal("the verifier accepted a read of an uninitialised register")
	}
	got := loadError(err)
	var ve *ebpf.VerifierError
	if !errors.As(got, &ve) {
		t.Fatalf("the verifier error is not wrapped: %v", got)
	}
	msg := got.Error()
	if !strings.Contains(msg, "R5 !read_ok") || !strings.Contains(msg, "verifier rejected") {
		t.Fatalf("message lacks the reason: %s", msg)
	}
	if lines := strings.Count(msg, "\n"); lines > 30 {
		t.Fatalf("message has %d lines, want the log trimmed", lines)
	}
}
