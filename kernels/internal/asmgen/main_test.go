package main

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestGenerated checks that the committed kernels/matmul_amd64.s is this
// program's output (run go generate in kernels after changing it).
func TestGenerated(t *testing.T) {
	got, err := os.ReadFile("../../matmul_amd64.s")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, Generate()) {
		t.Error("kernels/matmul_amd64.s is stale: run go generate ./kernels")
	}
}

// TestAVX2NoEVEX checks that the functions the avx2 kernel set may call
// (all but those named for VNNI or AVX-512) use no AVX-512 feature: no
// EVEX-only instruction, register or operand form, so that Go's assembler
// encodes them all with VEX and they run on CPUs without AVX-512.
func TestAVX2NoEVEX(t *testing.T) {
	evexOnly := regexp.MustCompile(`\b(VPDPBUSDS?|VPDPWSSDS?|VMOVDQ[AU](32|64)|VP(XOR|AND|ANDN|OR)[DQ]|VPTERNLOG[DQ]|VPERM[WB]|VPMOV[DQ]?[BWD]\b)|\.(BCST|Z)\b|\b[XY](1[6-9]|2[0-9]|3[01])\b|\bZ[0-9]+\b|\bK[0-7]\b`)
	var fn string
	funcs := 0
	for _, l := range strings.Split(string(Generate()), "\n") {
		if name, ok := strings.CutPrefix(l, "TEXT ·"); ok {
			fn = name[:strings.Index(name, "(")]
			funcs++
			continue
		}
		if fn == "" || strings.Contains(fn, "VNNI") || strings.Contains(fn, "AVX512") || !strings.HasPrefix(l, "\t") {
			continue
		}
		if m := evexOnly.FindString(l); m != "" {
			t.Errorf("%s uses %q, which needs AVX-512: %s", fn, m, strings.TrimSpace(l))
		}
	}
	if funcs < 40 {
		t.Fatalf("found %d functions; the parser is out of step with the output", funcs)
	}
}
