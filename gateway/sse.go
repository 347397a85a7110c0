package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Limits on one upstream event, so that a broken upstream cannot grow the
// gateway's buffers without bound.
const (
	maxLine  = 4 << 20
	maxEvent = 16 << 20
)

var errTooLong = errors.New("gateway: upstream line or event too long")

// source is an upstream's stream as OpenAI server-sent events.
type source interface {
	// next returns the next event: raw, its bytes as the client gets them
	// (blank line included), and data, its data lines joined. Both are
	// valid until the next call. At the stream's clean end it returns
	// io.EOF; any other error means the stream broke.
	next() (raw, data []byte, err error)
	// buffered reports whether more input is at hand without blocking:
	// the relay flushes to the client only when it is not.
	buffered() bool
}

// lineReader reads lines of at most maxLine bytes.
type lineReader struct {
	r    *bufio.Reader
	line []byte
}

func newLineReader(r io.Reader) *lineReader { return &lineReader{r: bufio.NewReaderSize(r, 32<<10)} }

// readLine returns the next line with its terminator. At the end of input
// it returns io.EOF, or io.ErrUnexpectedEOF after a partial line.
func (l *lineReader) readLine() ([]byte, error) {
	l.line = l.line[:0]
	for {
		frag, err := l.r.ReadSlice('\n')
		if len(l.line)+len(frag) > maxLine {
			return nil, errTooLong
		}
		l.line = append(l.line, frag...)
		switch {
		case err == nil:
			return l.line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err == io.EOF && len(l.line) > 0:
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

// sseSource passes an OpenAI-compatible upstream's events through as
// they are. It splits on blank lines (LF or CRLF), as the SSE
// specification does, and keeps comments and other fields in raw.
type sseSource struct {
	lr        *lineReader
	raw, data []byte
}

func newSSESource(r io.Reader) *sseSource { return &sseSource{lr: newLineReader(r)} }

func (s *sseSource) buffered() bool { return s.lr.r.Buffered() > 0 }

func (s *sseSource) next() (raw, data []byte, err error) {
	s.raw, s.data = s.raw[:0], s.data[:0]
	hasData := false
	for {
		line, err := s.lr.readLine()
		if err != nil {
			if err == io.EOF && len(s.raw) > 0 {
				err = io.ErrUnexpectedEOF // an event without its blank line
			}
			return nil, nil, err
		}
		if len(s.raw)+len(line) > maxEvent {
			return nil, nil, errTooLong
		}
		s.raw = append(s.raw, line...)
		body := bytes.TrimRight(line, "\r\n")
		if len(body) == 0 {
			if hasData {
				return s.raw, s.data, nil
			}
			s.raw = s.raw[:0] // a blank line with no event: dropped
			continue
		}
		if v, ok := bytes.CutPrefix(body, []byte("data:")); ok {
			v = bytes.TrimPrefix(v, []byte(" "))
			if hasData {
				s.data = append(s.data, '\n')
			}
			s.data = append(s.data, v...)
			hasData = true
		}
	}
}

// queueSource is a source whose events a translator appends to a queue:
// see tgiSource and ollamaSource.
type queueSource struct {
	q    [][]byte // pending events, "data: ...\n\n"
	head []byte
	end  error // returned once q is empty
}

func (q *queueSource) push(ev []byte) { q.q = append(q.q, ev) }

// pop returns the next queued event, if any.
func (q *queueSource) pop() (raw, data []byte, ok bool) {
	if len(q.q) == 0 {
		return nil, nil, false
	}
	q.head, q.q = q.q[0], q.q[1:]
	data = bytes.TrimSuffix(bytes.TrimPrefix(q.head, []byte("data: ")), []byte("\n\n"))
	return q.head, data, true
}

// upstreamError is an error an upstream reported.
type upstreamError struct {
	upstream string
	msg      string
}

func (e *upstreamError) Error() string { return fmt.Sprintf("upstream %s: %s", e.upstream, e.msg) }
