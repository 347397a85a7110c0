package tokenizer

import "testing"

// Spot checks of the code point classes against llama.cpp's unicode-data.cpp
// (Unicode 15.1).
func TestCPFlags(t *testing.T) {
	tests := []struct {
		r    rune
		want uint16
	}{
		{'a', fLetter},
		{'7', fNumber},
		{'~', fSymbol},
		{'_', fPunct},
		{' ', fSeparator | fSpace},
		{'\n', fControl | fSpace},
		{0x1C, fControl}, // not White_Space
		{0x85, fControl | fSpace},
		{0xA0, fSeparator | fSpace},
		{0x0301, fMark},
		{0x0378, fUndef},   // unassigned
		{0xE000, fControl}, // private use
		{0xD800, fControl}, // surrogate
		{0x200B, fControl}, // ZERO WIDTH SPACE is Cf, not White_Space
		{0x3000, fSeparator | fSpace},
		{0x2FFC, fSymbol},  // Unicode 15.1
		{0x2EBF0, fLetter}, // Unicode 15.1
		{0x1C89, fUndef},   // Unicode 16.0, not in llama.cpp's tables
		{0x1F999, fSymbol}, // 🦙
		{0x10FFFF, fUndef},
		{0x110000, fUndef},
		{-1, fUndef},
	}
	for _, tc := range tests {
		if got := cpFlags(tc.r); got != tc.want {
			t.Errorf("cpFlags(%U) = %#x, want %#x", tc.r, got, tc.want)
		}
	}
}

func TestDecodeCP(t *testing.T) {
	tests := []struct {
		in string
		r  rune
		n  int
		ok bool
	}{
		{"a", 'a', 1, true},
		{"é", 'é', 2, true},
		{"\xed\xa0\x80", 0xD800, 3, true}, // surrogates pass, as in llama.cpp
		{"\xc0\x80", 0, 2, true},          // so do overlong forms
		{"\x80", 0, 1, false},
		{"\xe2\x82", 0, 1, false},
		{"\xf4\x90\x80\x80", 0, 1, false}, // past U+10FFFF
		{"\xff", 0, 1, false},
	}
	for _, tc := range tests {
		r, n, ok := decodeCP(tc.in)
		if r != tc.r || n != tc.n || ok != tc.ok {
			t.Errorf("decodeCP(%q) = %U, %d, %v; want %U, %d, %v", tc.in, r, n, ok, tc.r, tc.n, tc.ok)
		}
	}
}
