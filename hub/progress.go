package hub

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Progress output pacing.
const (
	redrawEvery = 100 * time.Millisecond // terminal: at most ~10 redraws a second
	lineEvery   = 10 * time.Second       // plain: a line at least this often, besides every 10%
	barWidth    = 24
)

// progress draws a download's progress bar. A nil *progress, or one
// with a nil writer, draws nothing. Its methods are called from one
// goroutine at a time.
type progress struct {
	w    io.Writer
	name string
	tty  bool             // redraw one line with \r, rather than print lines
	now  func() time.Time // time.Now; tests substitute a clock

	begin    time.Time // when the current attempt's body began
	base     int64     // bytes already there when it began
	cur      int64     // bytes of the file now
	total    int64     // the file's size, -1 if unknown
	last     time.Time // last redraw or line
	lastStep int64     // plain: last 10% step printed
	drawn    int       // tty: length of the line on screen, 0 if none
}

func newProgress(w io.Writer, name string) *progress {
	if w == nil {
		return nil
	}
	return &progress{w: w, name: name, tty: isTerminal(w), now: time.Now, total: -1}
}

// isTerminal reports whether w is a character device, such as a
// terminal, rather than a file or pipe.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// start begins an attempt whose body brings the file from offset bytes
// to total (-1 if unknown).
func (p *progress) start(offset, total int64, url string) {
	if p == nil {
		return
	}
	p.begin, p.last = p.now(), p.now()
	p.base, p.cur, p.total = offset, offset, total
	p.lastStep = p.step()
	switch {
	case offset > 0:
		p.note(fmt.Sprintf("resuming at %s of %s from %s", humanBytes(offset), sizeOrUnknown(total), url))
	default:
		p.note(fmt.Sprintf("downloading %s from %s", sizeOrUnknown(total), url))
	}
	if p.tty {
		p.draw()
	}
}

// add records n more bytes received.
func (p *progress) add(n int64) {
	if p == nil {
		return
	}
	p.cur += n
	now := p.now()
	if p.tty {
		if now.Sub(p.last) >= redrawEvery {
			p.last = now
			p.draw()
		}
		return
	}
	if s := p.step(); s > p.lastStep || now.Sub(p.last) >= lineEvery {
		p.lastStep = s
		p.last = now
		fmt.Fprintf(p.w, "%s: %s\n", p.name, p.line())
	}
}

// step is the number of whole tenths of the file received, 0 if the
// size is unknown.
func (p *progress) step() int64 {
	if p.total <= 0 {
		return 0
	}
	return p.cur * 10 / p.total
}

// note prints a message on its own line.
func (p *progress) note(msg string) {
	if p == nil {
		return
	}
	p.endLine()
	fmt.Fprintf(p.w, "%s: %s\n", p.name, msg)
}

// done reports a finished download.
func (p *progress) done() {
	if p == nil {
		return
	}
	if p.tty {
		p.draw()
		p.endLine()
	}
	if p.begin.IsZero() {
		fmt.Fprintf(p.w, "%s: done (the partial download was already complete)\n", p.name)
		return
	}
	el := p.now().Sub(p.begin)
	fmt.Fprintf(p.w, "%s: done, %s in %s (%s/s)\n", p.name, humanBytes(p.cur), el.Round(100*time.Millisecond), humanBytes(p.rate()))
}

// finish ends a half-drawn line; Resolve defers it for error paths.
func (p *progress) finish() {
	if p != nil {
		p.endLine()
	}
}

func (p *progress) endLine() {
	if p.drawn > 0 {
		fmt.Fprint(p.w, "\n")
		p.drawn = 0
	}
}

// draw redraws the terminal line in place, blanking what is left of a
// longer previous line.
func (p *progress) draw() {
	s := p.name + " " + p.line()
	pad := max(p.drawn-len(s), 0)
	fmt.Fprintf(p.w, "\r%s%s", s, strings.Repeat(" ", pad))
	p.drawn = len(s)
}

// rate is the average speed of the current attempt in bytes per second.
func (p *progress) rate() int64 {
	el := p.now().Sub(p.begin).Seconds()
	if el <= 0 {
		return 0
	}
	return int64(float64(p.cur-p.base) / el)
}

// line formats the bar: percent, bytes, rate and ETA when the size is
// known; bytes and rate otherwise.
func (p *progress) line() string {
	rate := p.rate()
	if p.total <= 0 {
		return fmt.Sprintf("%s  %s/s", humanBytes(p.cur), humanBytes(rate))
	}
	frac := min(float64(p.cur)/float64(p.total), 1)
	fill := int(frac * barWidth)
	bar := strings.Repeat("=", fill) + strings.Repeat(" ", barWidth-fill)
	eta := "--"
	if rate > 0 && p.cur <= p.total {
		eta = formatETA(time.Duration(float64(p.total-p.cur) / float64(rate) * float64(time.Second)))
	}
	return fmt.Sprintf("%3d%% [%s] %s / %s  %s/s  ETA %s", int(frac*100), bar, humanBytes(p.cur), humanBytes(p.total), humanBytes(rate), eta)
}

// formatETA rounds to seconds: "42s", "3m12s", "1h02m".
func formatETA(d time.Duration) string {
	s := int64(d.Round(time.Second) / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	default:
		return fmt.Sprintf("%dh%02dm", s/3600, s/60%60)
	}
}

// humanBytes formats n in binary units: "512 B", "57.3 MiB".
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v := float64(n)
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB"} {
		v /= unit
		if v < unit || u == "TiB" {
			return fmt.Sprintf("%.1f %s", v, u)
		}
	}
	panic("unreachable")
}

func sizeOrUnknown(n int64) string {
	if n < 0 {
		return "unknown size"
	}
	return humanBytes(n)
}
