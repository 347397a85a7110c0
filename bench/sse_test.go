package bench

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

// readEvents reads every event of r, and the error that ended it.
func readEvents(r io.Reader) ([]SSEEvent, error) {
	s := NewSSEReader(r)
	var evs []SSEEvent
	for {
		ev, err := s.Next()
		if err != nil {
			return evs, err
		}
		evs = append(evs, ev)
	}
}

func TestSSEReader(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want []SSEEvent
		err  error
	}{
		{name: "one event", in: "data: {\"a\":1}\n\n", want: []SSEEvent{{Data: `{"a":1}`}}, err: io.EOF},
		{name: "done", in: "data: x\n\ndata: [DONE]\n\n", want: []SSEEvent{{Data: "x"}, {Data: "[DONE]"}}, err: io.EOF},
		{name: "multi-line data", in: "data: a\ndata:b\ndata:  c\n\n", want: []SSEEvent{{Data: "a\nb\n c"}}, err: io.EOF},
		{name: "comments and keepalives", in: ": ping\n\n:\ndata: x\n: mid\n\n", want: []SSEEvent{{Data: "x"}}, err: io.EOF},
		{name: "CRLF", in: "data: a\r\n\r\ndata: b\r\n\r\n", want: []SSEEvent{{Data: "a"}, {Data: "b"}}, err: io.EOF},
		{name: "CR", in: "data: a\r\rdata: b\r\r", want: []SSEEvent{{Data: "a"}, {Data: "b"}}, err: io.EOF},
		{name: "event type and id", in: "event: error\nid: 7\ndata: boom\n\ndata: next\n\n", want: []SSEEvent{{Type: "error", Data: "boom", ID: "7"}, {Data: "next", ID: "7"}}, err: io.EOF},
		{name: "event without data is dropped", in: "event: x\n\ndata: y\n\n", want: []SSEEvent{{Data: "y"}}, err: io.EOF},
		{name: "empty data field", in: "data\n\n", want: []SSEEvent{{Data: ""}}, err: io.EOF},
		{name: "unknown fields ignored", in: "retry: 10\nfoo: bar\ndata: x\n\n", want: []SSEEvent{{Data: "x"}}, err: io.EOF},
		{name: "llama.cpp error line", in: "data: a\n\nerror: {\"code\":500}\n\n", want: []SSEEvent{{Data: "a"}, {Type: "error", Data: `{"code":500}`}}, err: io.EOF},
		{name: "complete last event without blank line", in: "data: a\n\ndata: [DONE]\n", want: []SSEEvent{{Data: "a"}, {Data: "[DONE]"}}, err: io.EOF},
		{name: "truncated line", in: "data: a\n\ndata: {\"x", want: []SSEEvent{{Data: "a"}}, err: io.ErrUnexpectedEOF},
		{name: "empty stream", in: "", err: io.EOF},
		{name: "line too long", in: "data: " + strings.Repeat("x", MaxSSELine) + "\n\n", err: ErrSSETooLong},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			readers := []io.Reader{strings.NewReader(tc.in)}
			if len(tc.in) < 1<<10 {
				readers = append(readers, iotest.OneByteReader(strings.NewReader(tc.in)))
			}
			for _, r := range readers {
				got, err := readEvents(r)
				if !reflect.DeepEqual(got, tc.want) || !errors.Is(err, tc.err) {
					t.Fatalf("events %q, %v; want %q, %v", got, err, tc.want, tc.err)
				}
			}
		})
	}
}

func TestSSEReaderErrorsAreSticky(t *testing.T) {
	s := NewSSEReader(iotest.ErrReader(io.ErrClosedPipe))
	for range 2 {
		if _, err := s.Next(); err != io.ErrClosedPipe {
			t.Fatalf("Next error %v, want %v", err, io.ErrClosedPipe)
		}
	}
}

// FuzzSSE checks that the parser never panics, that how the bytes are
// split into reads does not change the events, and that what it returns
// has no line terminators where none can be.
func FuzzSSE(f *testing.F) {
	for _, s := range []string{
		"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n",
		"event: error\ndata: x\r\n\r\n: c\rdata\rid: 1\x00\n\n",
		"error: {\"message\":\"boom\"}\n\n", "data: a\ndata: b", "\r\n\r\r\n\n", "data:\xff\xfe\n\n",
	} {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, in []byte, split uint8) {
		whole, err1 := readEvents(strings.NewReader(string(in)))
		cut := min(int(split), len(in))
		pieces, err2 := readEvents(io.MultiReader(strings.NewReader(string(in[:cut])), iotest.HalfReader(strings.NewReader(string(in[cut:])))))
		if !reflect.DeepEqual(whole, pieces) || fmt.Sprint(err1) != fmt.Sprint(err2) {
			t.Fatalf("split at %d: %q, %v; whole: %q, %v", cut, pieces, err2, whole, err1)
		}
		for _, ev := range whole {
			if strings.ContainsAny(ev.Type+ev.ID, "\r\n") || strings.Contains(ev.Data, "\r") {
				t.Fatalf("event %q has a line terminator", ev)
			}
		}
	})
}
