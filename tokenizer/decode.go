package tokenizer

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// buildPieces renders every token as llama.cpp's token_to_piece with
// special=true does (its token-to-piece cache).
func (t *Tokenizer) buildPieces() {
	t.pieces = make([]string, len(t.texts))
	for id, text := range t.texts {
		a := t.attrs[id]
		switch {
		case a&(attrUnknown|attrControl|attrUserDefined) != 0:
			t.pieces[id] = text
		case a&attrNormal != 0:
			if t.spm || t.pre.rawBytes {
				t.pieces[id] = strings.ReplaceAll(text, "▁", " ")
			} else {
				t.pieces[id] = decodeByteLevel(text)
			}
		case a&attrByte != 0:
			t.pieces[id] = string([]byte{byteTokenValue(text)})
		}
	}
}

// byteTokenValue parses the XX of "<0xXX>" as llama.cpp does (strtol on two
// characters from offset 3; whatever does not parse counts as 0).
func byteTokenValue(text string) byte {
	if len(text) < 4 {
		return 0
	}
	h := text[3:min(5, len(text))]
	v := 0
	for i := 0; i < len(h); i++ {
		d, err := strconv.ParseUint(h[i:i+1], 16, 8)
		if err != nil {
			break
		}
		v = v*16 + int(d)
	}
	return byte(v)
}

// decodeByteLevel maps byte-level BPE text back to bytes (llama.cpp's
// llama_decode_text, unknown code points and all).
func decodeByteLevel(text string) string {
	var b []byte
	var u [4]byte
	for i := 0; i < len(text); {
		r, n, ok := decodeCP(text[i:])
		if !ok {
			r = 0xFFFD
		}
		i += n
		if c, ok := runeToByte[r]; ok {
			b = append(b, c)
			continue
		}
		b = append(b, "[UNK_BYTE_0x"...)
		for _, c := range appendCP(u[:0], r) {
			b = append(b, "0123456789abcdef"[c>>4], "0123456789abcdef"[c&15])
		}
		b = append(b, text...)
		b = append(b, ']')
	}
	return string(b)
}

// Piece is the text of token id as llama.cpp's llama_token_to_piece renders
// it with special=false: SentencePiece's ▁ becomes a space, byte tokens
// become their byte, byte-level BPE maps back to bytes, control and unknown
// tokens become "", and so do invalid ids. The result need not be valid
// UTF-8 (a byte token is one byte of a sequence).
func (t *Tokenizer) Piece(id int32) string {
	if !t.valid(id) || t.attrs[id]&(attrControl|attrUnknown) != 0 {
		return ""
	}
	return t.pieces[id]
}

// PieceSpecial is Piece with control and unknown tokens rendered as their
// text ("<|im_end|>"), as llama_token_to_piece with special=true.
func (t *Tokenizer) PieceSpecial(id int32) string {
	if !t.valid(id) {
		return ""
	}
	return t.pieces[id]
}

// Decode turns ids back into text as llama.cpp's llama_detokenize does with
// remove_special=false and unparse_special=false: it concatenates the Pieces
// (control tokens, BOS included, render as nothing), removes the leading
// space of the first piece when the vocabulary adds a space prefix (undoing
// the one Encode added; a BOS first takes that turn, so the space after it
// stays, as in llama.cpp), and, for most BPE vocabularies, cleans up
// spaces before punctuation and contractions (" ," → ",", " 's" → "'s").
// The result is bytes, not necessarily valid UTF-8; a [Decoder] gives the
// same text repaired and incrementally.
func (t *Tokenizer) Decode(ids []int32) string {
	b := make([]byte, 0, len(ids)*4)
	strip := t.addSpacePrefix
	var c cleaner
	for _, id := range ids {
		p := t.Piece(id)
		if strip && len(p) > 0 && p[0] == ' ' {
			p = p[1:]
		}
		strip = false
		if !t.cleanSpaces {
			b = append(b, p...)
			continue
		}
		for i := 0; i < len(p); i++ {
			b = c.push(b, p[i])
		}
	}
	if t.cleanSpaces {
		b = c.flush(b)
	}
	return string(b)
}

// A Decoder turns a stream of token ids into text incrementally. Append
// emits only complete UTF-8 and holds back what may still change: a partial
// multi-byte sequence (until it completes or cannot), and, for vocabularies
// whose Decode cleans up spaces, a space that the next byte may remove.
// Bytes that can never form valid UTF-8 are emitted as one U+FFFD per run,
// so the text emitted by Append calls followed by Flush is
// strings.ToValidUTF8(Decode(ids), "\uFFFD") for the ids appended (exactly
// Decode(ids) when that is valid UTF-8).
//
// Append and Flush allocate nothing when dst has room. A Decoder is not safe
// for concurrent use.
type Decoder struct {
	t *Tokenizer
	// KeepLeadingSpace stops the Decoder from removing the first piece's
	// leading space (see Decode). Set it when the ids continue a prompt, so
	// that the text is what llama.cpp's server streams.
	KeepLeadingSpace bool

	started bool // a token has been appended since NewDecoder or Reset
	clean   cleaner
	utf     utf8Repair
}

// NewDecoder returns a Decoder for t.
func (t *Tokenizer) NewDecoder() *Decoder { return &Decoder{t: t} }

// Reset makes d ready for a new sequence; KeepLeadingSpace stays as it is.
func (d *Decoder) Reset() {
	*d = Decoder{t: d.t, KeepLeadingSpace: d.KeepLeadingSpace}
}

// Append decodes id and appends to dst whatever text is now final.
func (d *Decoder) Append(dst []byte, id int32) []byte {
	p := d.t.Piece(id)
	if !d.started {
		d.started = true
		if d.t.addSpacePrefix && !d.KeepLeadingSpace && len(p) > 0 && p[0] == ' ' {
			p = p[1:]
		}
	}
	for i := 0; i < len(p); i++ {
		if d.t.cleanSpaces {
			dst = d.clean.pushTo(dst, p[i], &d.utf)
		} else {
			dst = d.utf.push(dst, p[i])
		}
	}
	return dst
}

// Flush ends the stream: it appends everything still held back. Call Reset
// before decoding another sequence.
func (d *Decoder) Flush(dst []byte) []byte {
	if d.t.cleanSpaces {
		dst = d.clean.flushTo(dst, &d.utf)
	}
	return d.utf.flush(dst)
}

// utf8Repair passes valid UTF-8 through and replaces each run of bytes that
// cannot be valid with one U+FFFD, as strings.ToValidUTF8 does, holding back
// an incomplete sequence until it is decided.
type utf8Repair struct {
	buf     [utf8.UTFMax]byte
	n       int
	invalid bool // the last thing emitted was a replacement
}

func (u *utf8Repair) push(dst []byte, c byte) []byte {
	if u.n == 0 && c < utf8.RuneSelf {
		u.invalid = false
		return append(dst, c)
	}
	u.buf[u.n] = c
	u.n++
	return u.drain(dst, false)
}

func (u *utf8Repair) flush(dst []byte) []byte { return u.drain(dst, true) }

// drain emits what is decided; at the end of the stream everything is.
func (u *utf8Repair) drain(dst []byte, final bool) []byte {
	for u.n > 0 {
		b := u.buf[:u.n]
		if !final && !utf8.FullRune(b) {
			break
		}
		r, size := utf8.DecodeRune(b)
		if r == utf8.RuneError && size == 1 {
			if !u.invalid {
				dst = append(dst, "\uFFFD"...)
				u.invalid = true
			}
		} else {
			dst = append(dst, b[:size]...)
			u.invalid = false
		}
		u.n = copy(u.buf[:], b[size:])
	}
	return dst
}

// cleaner is llama.cpp's clean_up_tokenization_spaces (the three passes at
// the end of llama_vocab::impl::detokenize) as a stream transducer:
//
//  1. a space before ? ! . , is removed;
//  2. " ' " becomes "'";
//  3. the space of " 's", " 'm", " 're", " 've" is removed.
//
// Each pass holds back the few bytes that the next ones may change.
type cleaner struct {
	s1 bool    // pass 1 holds a space
	s2 [2]byte // pass 2 holds "", " " or " '"
	n2 int
	s3 [3]byte // pass 3 holds "", " ", " '", " 'r" or " 'v"
	n3 int
}

// sink receives the cleaner's output bytes.
type sink interface {
	push(dst []byte, c byte) []byte
}

// rawSink appends bytes as they are.
type rawSink struct{}

func (rawSink) push(dst []byte, c byte) []byte { return append(dst, c) }

func (c *cleaner) push(dst []byte, b byte) []byte { return c.pushTo(dst, b, rawSink{}) }

func (c *cleaner) flush(dst []byte) []byte { return c.flushTo(dst, rawSink{}) }

func (c *cleaner) pushTo(dst []byte, b byte, out sink) []byte {
	// Pass 1.
	if c.s1 {
		c.s1 = false
		if b != '?' && b != '!' && b != '.' && b != ',' {
			dst = c.pass2(dst, ' ', out)
		}
	}
	if b == ' ' {
		c.s1 = true
		return dst
	}
	return c.pass2(dst, b, out)
}

func (c *cleaner) flushTo(dst []byte, out sink) []byte {
	if c.s1 {
		c.s1 = false
		dst = c.pass2(dst, ' ', out)
	}
	for i := 0; i < c.n2; i++ {
		dst = c.pass3(dst, c.s2[i], out)
	}
	c.n2 = 0
	for i := 0; i < c.n3; i++ {
		dst = out.push(dst, c.s3[i])
	}
	c.n3 = 0
	return dst
}

func (c *cleaner) pass2(dst []byte, b byte, out sink) []byte {
	switch c.n2 {
	case 1: // " "
		switch b {
		case '\'':
			c.s2[1] = b
			c.n2 = 2
			return dst
		case ' ':
			return c.pass3(dst, ' ', out)
		}
		c.n2 = 0
		dst = c.pass3(dst, ' ', out)
		return c.pass3(dst, b, out)
	case 2: // " '"
		c.n2 = 0
		if b == ' ' {
			return c.pass3(dst, '\'', out)
		}
		dst = c.pass3(dst, ' ', out)
		dst = c.pass3(dst, '\'', out)
		return c.pass2(dst, b, out)
	}
	if b == ' ' {
		c.s2[0] = b
		c.n2 = 1
		return dst
	}
	return c.pass3(dst, b, out)
}

func (c *cleaner) pass3(dst []byte, b byte, out sink) []byte {
	switch c.n3 {
	case 1: // " "
		switch b {
		case '\'':
			c.s3[1] = b
			c.n3 = 2
			return dst
		case ' ':
			return out.push(dst, ' ')
		}
		c.n3 = 0
		dst = out.push(dst, ' ')
		return out.push(dst, b)
	case 2: // " '"
		switch b {
		case 's', 'm':
			c.n3 = 0
			dst = out.push(dst, '\'')
			return out.push(dst, b)
		case 'r', 'v':
			c.s3[2] = b
			c.n3 = 3
			return dst
		}
		c.n3 = 0
		dst = out.push(dst, ' ')
		dst = out.push(dst, '\'')
		return c.pass3(dst, b, out)
	case 3: // " 'r" or " 'v"
		c.n3 = 0
		if b == 'e' {
			dst = out.push(dst, '\'')
			dst = out.push(dst, c.s3[2])
			return out.push(dst, b)
		}
		dst = out.push(dst, ' ')
		dst = out.push(dst, '\'')
		dst = out.push(dst, c.s3[2])
		return c.pass3(dst, b, out)
	}
	if b == ' ' {
		c.s3[0] = b
		c.n3 = 1
		return dst
	}
	return out.push(dst, b)
}
