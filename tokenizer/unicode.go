package tokenizer

import (
	"sync"
	"unicode"
)

// Code point classes, as llama.cpp's unicode.cpp assigns them: one general
// category (Cn is "undefined") plus the White_Space property. Go's tables
// are Unicode 15.0; unicode151 patches in what llama.cpp's 15.1 tables add.
const (
	fUndef uint16 = 1 << iota
	fNumber
	fLetter
	fSeparator
	fMark
	fPunct
	fSymbol
	fControl
	fSpace
)

// bmpFlags holds the flags of every code point below 0x10000, built on first
// use; code points above it are classified with the unicode tables directly.
var (
	bmpOnce  sync.Once
	bmpTable []uint16
)

var categoryTables = []struct {
	tab  *unicode.RangeTable
	flag uint16
}{
	{unicode.L, fLetter},
	{unicode.N, fNumber},
	{unicode.P, fPunct},
	{unicode.S, fSymbol},
	{unicode.M, fMark},
	{unicode.Z, fSeparator},
	{unicode.Cc, fControl},
	{unicode.Cf, fControl},
	{unicode.Co, fControl},
	{unicode.Cs, fControl},
}

// unicode151 holds the code points Unicode 15.1 assigned, which llama.cpp's
// tables (generated from Unicode 15.1) have and Go's (15.0) lack.
var unicode151 = []struct {
	lo, hi rune
	flag   uint16
}{
	{0x2FFC, 0x2FFF, fSymbol},   // ideographic description characters
	{0x31EF, 0x31EF, fSymbol},   // CJK stroke HXG
	{0x2EBF0, 0x2EE5D, fLetter}, // CJK Unified Ideographs Extension I
}

func buildBMP() {
	t := make([]uint16, 0x10000)
	for _, c := range categoryTables {
		for _, r := range c.tab.R16 {
			for x := uint32(r.Lo); x <= uint32(r.Hi); x += uint32(r.Stride) {
				t[x] |= c.flag
			}
		}
	}
	for _, r := range unicode151 {
		for x := r.lo; x <= r.hi && x < 0x10000; x++ {
			t[x] = r.flag
		}
	}
	for x := range t {
		if t[x] == 0 {
			t[x] = fUndef
		}
	}
	for _, r := range unicode.White_Space.R16 {
		for x := uint32(r.Lo); x <= uint32(r.Hi); x += uint32(r.Stride) {
			t[x] |= fSpace
		}
	}
	bmpTable = t
}

// cpFlags returns the class flags of code point r.
func cpFlags(r rune) uint16 {
	if r >= 0 && r < 0x10000 {
		bmpOnce.Do(buildBMP)
		return bmpTable[r]
	}
	if r < 0 || r > unicode.MaxRune {
		return fUndef
	}
	for _, u := range unicode151 {
		if r >= u.lo && r <= u.hi {
			return u.flag
		}
	}
	for _, c := range categoryTables {
		if unicode.Is(c.tab, r) {
			return c.flag // no supplementary code point is white space
		}
	}
	return fUndef
}

// decodeCP decodes one code point from s the way llama.cpp's
// unicode_cpt_from_utf8 does: the lead byte fixes the length, continuation
// bytes are checked, but overlong forms and surrogates are accepted. ok is
// false for an invalid sequence, of which the caller skips one byte. Code
// points past U+10FFFF, which llama.cpp cannot re-encode, count as invalid.
func decodeCP(s string) (r rune, n int, ok bool) {
	c := s[0]
	switch {
	case c < 0x80:
		return rune(c), 1, true
	case c&0x40 == 0:
		return 0, 1, false
	case c&0x20 == 0:
		if len(s) < 2 || s[1]&0xC0 != 0x80 {
			return 0, 1, false
		}
		return rune(c&0x1F)<<6 | rune(s[1]&0x3F), 2, true
	case c&0x10 == 0:
		if len(s) < 3 || s[1]&0xC0 != 0x80 || s[2]&0xC0 != 0x80 {
			return 0, 1, false
		}
		return rune(c&0x0F)<<12 | rune(s[1]&0x3F)<<6 | rune(s[2]&0x3F), 3, true
	case c&0x08 == 0:
		if len(s) < 4 || s[1]&0xC0 != 0x80 || s[2]&0xC0 != 0x80 || s[3]&0xC0 != 0x80 {
			return 0, 1, false
		}
		r = rune(c&0x07)<<18 | rune(s[1]&0x3F)<<12 | rune(s[2]&0x3F)<<6 | rune(s[3]&0x3F)
		if r > unicode.MaxRune {
			return 0, 1, false
		}
		return r, 4, true
	}
	return 0, 1, false
}

// appendCP appends the UTF-8 encoding of r as llama.cpp's unicode_cpt_to_utf8
// writes it (surrogates included, unlike utf8.AppendRune).
func appendCP(b []byte, r rune) []byte {
	switch {
	case r < 0x80:
		return append(b, byte(r))
	case r < 0x800:
		return append(b, 0xC0|byte(r>>6), 0x80|byte(r)&0x3F)
	case r < 0x10000:
		return append(b, 0xE0|byte(r>>12), 0x80|byte(r>>6)&0x3F, 0x80|byte(r)&0x3F)
	default:
		return append(b, 0xF0|byte(r>>18), 0x80|byte(r>>12)&0x3F, 0x80|byte(r>>6)&0x3F, 0x80|byte(r)&0x3F)
	}
}

// utf8Len is llama.cpp's unicode_len_utf8: the sequence length a lead byte
// announces (1 for a stray continuation byte).
func utf8Len(c byte) int {
	switch c >> 4 {
	case 0xC, 0xD:
		return 2
	case 0xE:
		return 3
	case 0xF:
		return 4
	}
	return 1
}

// Byte-level BPE maps every byte to a printable code point (GPT-2's
// bytes_to_unicode): printable Latin-1 bytes map to themselves, the rest to
// U+0100 and up, in byte order.
var (
	byteToRune [256]rune
	runeToByte = map[rune]byte{}
	// byteToEnc is byteToRune[b] encoded as UTF-8.
	byteToEnc [256]string
)

func init() {
	n := rune(0)
	for b := 0; b < 256; b++ {
		if (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			byteToRune[b] = rune(b)
		} else {
			byteToRune[b] = 256 + n
			n++
		}
		runeToByte[byteToRune[b]] = byte(b)
		byteToEnc[b] = string(byteToRune[b])
	}
}
