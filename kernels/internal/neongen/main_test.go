package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// TestGenerated checks that the committed kernels/neon_arm64.s is this
// program's output (run go generate in kernels after changing it).
func TestGenerated(t *testing.T) {
	got, err := os.ReadFile("../../neon_arm64.s")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, Generate()) {
		t.Error("kernels/neon_arm64.s is stale: run go generate ./kernels")
	}
}

// encodings are instruction words as GNU as (binutils 2.40,
// aarch64-linux-gnu-as -march=armv8.2-a+dotprod) assembles them from the
// text beside them, which is its disassembly. idx < 0 means the
// instruction is not the indexed form.
var encodings = []struct {
	name    string
	d, n, m int
	idx     int
	word    uint32
	gnu     string
}{
	{"BIC", 1, 2, 3, -1, 0x4e631c41, "bic v1.16b, v2.16b, v3.16b"},
	{"BIC", 31, 16, 24, -1, 0x4e781e1f, "bic v31.16b, v16.16b, v24.16b"},
	{"FABS", 1, 2, 0, -1, 0x4ea0f841, "fabs v1.4s, v2.4s"},
	{"FABS", 31, 16, 0, -1, 0x4ea0fa1f, "fabs v31.4s, v16.4s"},
	{"FADD", 1, 2, 3, -1, 0x4e23d441, "fadd v1.4s, v2.4s, v3.4s"},
	{"FADD", 31, 16, 24, -1, 0x4e38d61f, "fadd v31.4s, v16.4s, v24.4s"},
	{"FADD.2D", 1, 2, 3, -1, 0x4e63d441, "fadd v1.2d, v2.2d, v3.2d"},
	{"FADD.2D", 31, 16, 24, -1, 0x4e78d61f, "fadd v31.2d, v16.2d, v24.2d"},
	{"FADDP", 1, 2, 3, -1, 0x6e23d441, "faddp v1.4s, v2.4s, v3.4s"},
	{"FADDP", 31, 16, 24, -1, 0x6e38d61f, "faddp v31.4s, v16.4s, v24.4s"},
	{"FADDP.D", 1, 2, 0, -1, 0x7e70d841, "faddp d1, v2.2d"},
	{"FADDP.D", 31, 16, 0, -1, 0x7e70da1f, "faddp d31, v16.2d"},
	{"FADDP.S", 1, 2, 0, -1, 0x7e30d841, "faddp s1, v2.2s"},
	{"FADDP.S", 31, 16, 0, -1, 0x7e30da1f, "faddp s31, v16.2s"},
	{"FCMGE", 1, 2, 3, -1, 0x6e23e441, "fcmge v1.4s, v2.4s, v3.4s"},
	{"FCMGE", 31, 16, 24, -1, 0x6e38e61f, "fcmge v31.4s, v16.4s, v24.4s"},
	{"FCMGT", 1, 2, 3, -1, 0x6ea3e441, "fcmgt v1.4s, v2.4s, v3.4s"},
	{"FCMGT", 31, 16, 24, -1, 0x6eb8e61f, "fcmgt v31.4s, v16.4s, v24.4s"},
	{"FCVT.SH", 1, 2, 0, -1, 0x1ee24041, "fcvt s1, h2"},
	{"FCVT.SH", 31, 16, 0, -1, 0x1ee2421f, "fcvt s31, h16"},
	{"FCVTL", 1, 2, 0, -1, 0x0e217841, "fcvtl v1.4s, v2.4h"},
	{"FCVTL", 31, 16, 0, -1, 0x0e217a1f, "fcvtl v31.4s, v16.4h"},
	{"FCVTL.2D", 1, 2, 0, -1, 0x0e617841, "fcvtl v1.2d, v2.2s"},
	{"FCVTL.2D", 31, 16, 0, -1, 0x0e617a1f, "fcvtl v31.2d, v16.2s"},
	{"FCVTL2", 1, 2, 0, -1, 0x4e217841, "fcvtl2 v1.4s, v2.8h"},
	{"FCVTL2", 31, 16, 0, -1, 0x4e217a1f, "fcvtl2 v31.4s, v16.8h"},
	{"FCVTL2.2D", 1, 2, 0, -1, 0x4e617841, "fcvtl2 v1.2d, v2.4s"},
	{"FCVTL2.2D", 31, 16, 0, -1, 0x4e617a1f, "fcvtl2 v31.2d, v16.4s"},
	{"FCVTNS", 1, 2, 0, -1, 0x4e21a841, "fcvtns v1.4s, v2.4s"},
	{"FCVTNS", 31, 16, 0, -1, 0x4e21aa1f, "fcvtns v31.4s, v16.4s"},
	{"FDIV", 1, 2, 3, -1, 0x6e23fc41, "fdiv v1.4s, v2.4s, v3.4s"},
	{"FDIV", 31, 16, 24, -1, 0x6e38fe1f, "fdiv v31.4s, v16.4s, v24.4s"},
	{"FMAX", 1, 2, 3, -1, 0x4e23f441, "fmax v1.4s, v2.4s, v3.4s"},
	{"FMAX", 31, 16, 24, -1, 0x4e38f61f, "fmax v31.4s, v16.4s, v24.4s"},
	{"FMAXV", 1, 2, 0, -1, 0x6e30f841, "fmaxv s1, v2.4s"},
	{"FMAXV", 31, 16, 0, -1, 0x6e30fa1f, "fmaxv s31, v16.4s"},
	{"FMIN", 1, 2, 3, -1, 0x4ea3f441, "fmin v1.4s, v2.4s, v3.4s"},
	{"FMIN", 31, 16, 24, -1, 0x4eb8f61f, "fmin v31.4s, v16.4s, v24.4s"},
	{"FMUL", 1, 2, 3, -1, 0x6e23dc41, "fmul v1.4s, v2.4s, v3.4s"},
	{"FMUL", 31, 16, 24, -1, 0x6e38de1f, "fmul v31.4s, v16.4s, v24.4s"},
	{"FNEG", 1, 2, 0, -1, 0x6ea0f841, "fneg v1.4s, v2.4s"},
	{"FNEG", 31, 16, 0, -1, 0x6ea0fa1f, "fneg v31.4s, v16.4s"},
	{"FRINTM", 1, 2, 0, -1, 0x4e219841, "frintm v1.4s, v2.4s"},
	{"FRINTM", 31, 16, 0, -1, 0x4e219a1f, "frintm v31.4s, v16.4s"},
	{"FSUB", 1, 2, 3, -1, 0x4ea3d441, "fsub v1.4s, v2.4s, v3.4s"},
	{"FSUB", 31, 16, 24, -1, 0x4eb8d61f, "fsub v31.4s, v16.4s, v24.4s"},
	{"MUL", 1, 2, 3, -1, 0x4ea39c41, "mul v1.4s, v2.4s, v3.4s"},
	{"MUL", 31, 16, 24, -1, 0x4eb89e1f, "mul v31.4s, v16.4s, v24.4s"},
	{"SADALP.4S", 1, 2, 0, -1, 0x4e606841, "sadalp v1.4s, v2.8h"},
	{"SADALP.4S", 31, 16, 0, -1, 0x4e606a1f, "sadalp v31.4s, v16.8h"},
	{"SADALP.8H", 1, 2, 0, -1, 0x4e206841, "sadalp v1.8h, v2.16b"},
	{"SADALP.8H", 31, 16, 0, -1, 0x4e206a1f, "sadalp v31.8h, v16.16b"},
	{"SADDLP.4S", 1, 2, 0, -1, 0x4e602841, "saddlp v1.4s, v2.8h"},
	{"SADDLP.4S", 31, 16, 0, -1, 0x4e602a1f, "saddlp v31.4s, v16.8h"},
	{"SADDLP.8H", 1, 2, 0, -1, 0x4e202841, "saddlp v1.8h, v2.16b"},
	{"SADDLP.8H", 31, 16, 0, -1, 0x4e202a1f, "saddlp v31.8h, v16.16b"},
	{"SCVTF", 1, 2, 0, -1, 0x4e21d841, "scvtf v1.4s, v2.4s"},
	{"SCVTF", 31, 16, 0, -1, 0x4e21da1f, "scvtf v31.4s, v16.4s"},
	{"SDOT", 1, 2, 3, -1, 0x4e839441, "sdot v1.4s, v2.16b, v3.16b"},
	{"SDOT", 31, 16, 24, -1, 0x4e98961f, "sdot v31.4s, v16.16b, v24.16b"},
	{"SHLL", 1, 2, 0, -1, 0x2e613841, "shll v1.4s, v2.4h, #16"},
	{"SHLL", 31, 16, 0, -1, 0x2e613a1f, "shll v31.4s, v16.4h, #16"},
	{"SHLL2", 1, 2, 0, -1, 0x6e613841, "shll2 v1.4s, v2.8h, #16"},
	{"SHLL2", 31, 16, 0, -1, 0x6e613a1f, "shll2 v31.4s, v16.8h, #16"},
	{"SMLAL", 1, 2, 3, -1, 0x0e238041, "smlal v1.8h, v2.8b, v3.8b"},
	{"SMLAL", 31, 16, 24, -1, 0x0e38821f, "smlal v31.8h, v16.8b, v24.8b"},
	{"SMLAL2", 1, 2, 3, -1, 0x4e238041, "smlal2 v1.8h, v2.16b, v3.16b"},
	{"SMLAL2", 31, 16, 24, -1, 0x4e38821f, "smlal2 v31.8h, v16.16b, v24.16b"},
	{"SMULL", 1, 2, 3, -1, 0x0e23c041, "smull v1.8h, v2.8b, v3.8b"},
	{"SMULL", 31, 16, 24, -1, 0x0e38c21f, "smull v31.8h, v16.8b, v24.8b"},
	{"SMULL2", 1, 2, 3, -1, 0x4e23c041, "smull2 v1.8h, v2.16b, v3.16b"},
	{"SMULL2", 31, 16, 24, -1, 0x4e38c21f, "smull2 v31.8h, v16.16b, v24.16b"},
	{"SQXTN.4H", 1, 2, 0, -1, 0x0e614841, "sqxtn v1.4h, v2.4s"},
	{"SQXTN.4H", 31, 16, 0, -1, 0x0e614a1f, "sqxtn v31.4h, v16.4s"},
	{"SQXTN.8B", 1, 2, 0, -1, 0x0e214841, "sqxtn v1.8b, v2.8h"},
	{"SQXTN.8B", 31, 16, 0, -1, 0x0e214a1f, "sqxtn v31.8b, v16.8h"},
	{"SQXTN2.16B", 1, 2, 0, -1, 0x4e214841, "sqxtn2 v1.16b, v2.8h"},
	{"SQXTN2.16B", 31, 16, 0, -1, 0x4e214a1f, "sqxtn2 v31.16b, v16.8h"},
	{"SQXTN2.8H", 1, 2, 0, -1, 0x4e614841, "sqxtn2 v1.8h, v2.4s"},
	{"SQXTN2.8H", 31, 16, 0, -1, 0x4e614a1f, "sqxtn2 v31.8h, v16.4s"},
	{"SSHR.1", 1, 2, 0, -1, 0x4f3f0441, "sshr v1.4s, v2.4s, #1"},
	{"SSHR.1", 31, 16, 0, -1, 0x4f3f061f, "sshr v31.4s, v16.4s, #1"},
	{"SXTL.4S", 1, 2, 0, -1, 0x0f10a441, "sxtl v1.4s, v2.4h"},
	{"SXTL.4S", 31, 16, 0, -1, 0x0f10a61f, "sxtl v31.4s, v16.4h"},
	{"SXTL.8H", 1, 2, 0, -1, 0x0f08a441, "sxtl v1.8h, v2.8b"},
	{"SXTL.8H", 31, 16, 0, -1, 0x0f08a61f, "sxtl v31.8h, v16.8b"},
	{"SXTL2.4S", 1, 2, 0, -1, 0x4f10a441, "sxtl2 v1.4s, v2.8h"},
	{"SXTL2.4S", 31, 16, 0, -1, 0x4f10a61f, "sxtl2 v31.4s, v16.8h"},
	{"SXTL2.8H", 1, 2, 0, -1, 0x4f08a441, "sxtl2 v1.8h, v2.16b"},
	{"SXTL2.8H", 31, 16, 0, -1, 0x4f08a61f, "sxtl2 v31.8h, v16.16b"},
	{"FMUL", 30, 1, 7, 0, 0x4f87903e, "fmul v30.4s, v1.4s, v7.s[0]"},
	{"FMUL", 29, 2, 15, 1, 0x4faf905d, "fmul v29.4s, v2.4s, v15.s[1]"},
	{"FMUL", 28, 3, 23, 2, 0x4f97987c, "fmul v28.4s, v3.4s, v23.s[2]"},
	{"FMUL", 27, 4, 31, 3, 0x4fbf989b, "fmul v27.4s, v4.4s, v31.s[3]"},
	{"FMLA", 30, 1, 7, 0, 0x4f87103e, "fmla v30.4s, v1.4s, v7.s[0]"},
	{"FMLA", 29, 2, 15, 1, 0x4faf105d, "fmla v29.4s, v2.4s, v15.s[1]"},
	{"FMLA", 28, 3, 23, 2, 0x4f97187c, "fmla v28.4s, v3.4s, v23.s[2]"},
	{"FMLA", 27, 4, 31, 3, 0x4fbf189b, "fmla v27.4s, v4.4s, v31.s[3]"},
}

// TestEncodings checks the encoder against GNU as, word and text, and
// that every instruction it knows is covered.
func TestEncodings(t *testing.T) {
	seen := map[string]bool{}
	for _, e := range encodings {
		var w uint32
		var text string
		if e.idx >= 0 {
			w, text = encodeElem(e.name, e.d, e.n, e.m, e.idx)
		} else {
			w, text = encode(e.name, e.d, e.n, e.m)
			seen[e.name] = true
		}
		if w != e.word {
			t.Errorf("%s: encoded %#08x, GNU as gives %#08x", text, w, e.word)
		}
		if got := strings.ToLower(text); got != e.gnu {
			t.Errorf("%s %d, %d, %d: text %q, GNU objdump writes %q", e.name, e.d, e.n, e.m, got, e.gnu)
		}
	}
	for name := range ops {
		if !seen[name] {
			t.Errorf("%s has no encoding checked against GNU as", name)
		}
	}
}
