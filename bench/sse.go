package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Limits that keep a hostile or broken server from growing the reader
// without bound.
const (
	MaxSSELine  = 4 << 20  // bytes in one line
	MaxSSEEvent = 16 << 20 // bytes of data in one event
)

// ErrSSETooLong reports a line or event over [MaxSSELine] or [MaxSSEEvent].
var ErrSSETooLong = errors.New("sse: line or event too long")

// An SSEEvent is one dispatched server-sent event.
type SSEEvent struct {
	// Type is the "event:" field; empty for the default type, "message".
	Type string
	// Data is the "data:" lines joined with "\n".
	Data string
	// ID is the last "id:" seen so far in the stream, as the
	// specification's last event ID.
	ID string
}

// An SSEReader parses a text/event-stream as the WHATWG HTML
// specification describes (§9.2.6): lines end in LF, CR or CRLF; a line
// beginning with ':' is a comment; "field: value" loses one space after
// the colon; several data lines join with "\n"; a blank line dispatches
// the event, unless it had no data line. It differs from the
// specification in two lenient ways that suit LLM servers:
//
//   - An "error:" line, which llama.cpp's server writes instead of
//     "event: error" + "data:", is read as data of an event of type
//     "error".
//   - At the end of the stream a pending event whose last line was
//     complete is dispatched, as if the blank line had come; an
//     unterminated last line is a truncated stream, reported as
//     io.ErrUnexpectedEOF.
type SSEReader struct {
	r      *bufio.Reader
	line   []byte
	skipLF bool // the last line ended in CR: ignore an LF that follows
	lastID string
	err    error // sticky
}

// NewSSEReader returns a reader of the events in r.
func NewSSEReader(r io.Reader) *SSEReader {
	return &SSEReader{r: bufio.NewReaderSize(r, 16<<10)}
}

// Next returns the next event. At the end of the stream it returns
// io.EOF, or io.ErrUnexpectedEOF if the stream ended in the middle of a
// line; errors from the underlying reader are returned as they are.
// After an error every call returns the same error.
func (s *SSEReader) Next() (SSEEvent, error) {
	if s.err != nil {
		return SSEEvent{}, s.err
	}
	var (
		typ     string
		data    []byte
		hasData bool
	)
	for {
		line, err := s.readLine()
		if err != nil {
			s.err = err
			if err == io.EOF && hasData {
				return SSEEvent{Type: typ, Data: string(bytes.TrimSuffix(data, []byte("\n"))), ID: s.lastID}, nil
			}
			return SSEEvent{}, err
		}
		if len(line) == 0 {
			if hasData {
				return SSEEvent{Type: typ, Data: string(bytes.TrimSuffix(data, []byte("\n"))), ID: s.lastID}, nil
			}
			typ = ""
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value, found := bytes.Cut(line, []byte(":"))
		if found && len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
		switch string(field) {
		case "data":
		case "error":
			typ = "error"
		case "event":
			typ = string(value)
			continue
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				s.lastID = string(value)
			}
			continue
		default: // "retry" and unknown fields
			continue
		}
		if len(data)+len(value)+1 > MaxSSEEvent {
			s.err = ErrSSETooLong
			return SSEEvent{}, s.err
		}
		data = append(data, value...)
		data = append(data, '\n')
		hasData = true
	}
}

// readLine returns the next line without its terminator. The slice is
// valid until the next call. It returns io.EOF at the end of the stream,
// io.ErrUnexpectedEOF if the stream ends inside a line.
func (s *SSEReader) readLine() ([]byte, error) {
	s.line = s.line[:0]
	for {
		if s.r.Buffered() == 0 {
			if _, err := s.r.Peek(1); err != nil {
				if err == io.EOF && len(s.line) > 0 {
					err = io.ErrUnexpectedEOF
				}
				return nil, err
			}
		}
		buf, _ := s.r.Peek(s.r.Buffered())
		if s.skipLF {
			s.skipLF = false
			if buf[0] == '\n' {
				s.r.Discard(1)
				continue
			}
		}
		i := bytes.IndexAny(buf, "\r\n")
		n := i
		if i < 0 {
			n = len(buf)
		}
		if len(s.line)+n > MaxSSELine {
			return nil, fmt.Errorf("%w: a line over %d bytes", ErrSSETooLong, MaxSSELine)
		}
		s.line = append(s.line, buf[:n]...)
		if i < 0 {
			s.r.Discard(n)
			continue
		}
		s.skipLF = buf[i] == '\r'
		s.r.Discard(i + 1)
		return s.line, nil
	}
}
