package hub

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// fakeClock advances by step on every reading.
type fakeClock struct {
	t    time.Time
	step time.Duration
}

func (c *fakeClock) now() time.Time { c.t = c.t.Add(c.step); return c.t }

func TestProgressTerminal(t *testing.T) {
	var out bytes.Buffer
	clk := &fakeClock{t: time.Unix(0, 0), step: 10 * time.Millisecond}
	p := &progress{w: &out, name: "m.gguf", tty: true, now: clk.now, total: -1}
	p.start(0, 100<<20, "http://x/m.gguf")
	for range 100 { // 1 MiB per 10 ms reading: 100 MiB/s
		p.add(1 << 20)
	}
	p.done()
	s := out.String()
	if n := strings.Count(s, "\r"); n < 8 || n > 13 { // ~1 s of fake time at most 10 redraws/s, plus start and done
		t.Errorf("%d redraws, want about 10:\n%q", n, s)
	}
	if !strings.Contains(s, "100% [========================] 100.0 MiB / 100.0 MiB") {
		t.Errorf("no full bar in %q", s)
	}
	if !strings.Contains(s, "MiB/s  ETA ") || !strings.HasSuffix(s, "/s)\n") {
		t.Errorf("output %q", s)
	}
}

func TestProgressPlainLines(t *testing.T) {
	var out bytes.Buffer
	clk := &fakeClock{t: time.Unix(0, 0), step: time.Millisecond}
	p := &progress{w: &out, name: "m.gguf", now: clk.now, total: -1}
	p.start(250, 1000, "http://x/m.gguf")
	for range 75 {
		p.add(10)
	}
	p.done()
	s := out.String()
	if strings.Contains(s, "\r") {
		t.Errorf("plain output has \\r: %q", s)
	}
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	// resuming line, one per 10% from 30% to 100% (8), done line
	if len(lines) != 10 || !strings.Contains(lines[0], "resuming at 250 B of 1000 B") || !strings.HasPrefix(lines[9], "m.gguf: done, 1000 B") {
		t.Errorf("lines:\n%s", s)
	}
	if !strings.Contains(lines[1], " 30% [=======") || !strings.Contains(lines[1], "ETA ") {
		t.Errorf("first progress line %q", lines[1])
	}
}

func TestNilProgress(t *testing.T) {
	p := newProgress(nil, "x")
	p.start(0, 10, "u")
	p.add(5)
	p.note("n")
	p.done()
	p.finish()
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 57 << 20: "57.0 MiB", 3 << 40: "3.0 TiB", 5000 << 40: "5000.0 TiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
	for d, want := range map[time.Duration]string{4 * time.Second: "4s", 192 * time.Second: "3m12s", 3720 * time.Second: "1h02m"} {
		if got := formatETA(d); got != want {
			t.Errorf("formatETA(%v) = %q, want %q", d, got, want)
		}
	}
}
