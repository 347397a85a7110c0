package stream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spigot-llm/spigot/engine"
)

// frame is one Sink.Write as the recording sink saw it.
type frame struct {
	at   time.Duration // since the test's start (fake time)
	seqs []uint64
	text string
	kind []Kind
}

// recorder is a Sink that records frames and keepalives with their times.
type recorder struct {
	start time.Time
	mu    sync.Mutex
	// failAfter, if positive, makes the Write after this many fail.
	failAfter int
	frames    []frame
	keepalive []time.Duration
}

var errSink = errors.New("sink failed")

func (r *recorder) Write(es []Entry) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failAfter > 0 && len(r.frames) == r.failAfter {
		return errSink
	}
	f := frame{at: time.Since(r.start)}
	var b strings.Builder
	for _, e := range es {
		f.seqs = append(f.seqs, e.Seq)
		f.kind = append(f.kind, e.Kind)
		b.WriteString(e.Event.Text)
	}
	f.text = b.String()
	r.frames = append(r.frames, f)
	return nil
}

func (r *recorder) KeepAlive() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.keepalive = append(r.keepalive, time.Since(r.start))
	return nil
}

func tok(i int) Entry {
	return Entry{Kind: Token, Visible: true, Event: engine.Event{Token: int32(i), Text: fmt.Sprintf("t%d ", i)}}
}

// finish appends the entries that end a one-choice request.
func finish(l *Log) {
	l.Append(Entry{Kind: End}, Entry{Kind: Final}, Entry{Kind: Done})
}

// deliver runs Deliver in a goroutine and returns a function that waits
// for it.
func deliver(ctx context.Context, l *Log, after uint64, o Options, r *recorder) func() (uint64, error) {
	var (
		last uint64
		err  error
		done = make(chan struct{})
	)
	go func() {
		defer close(done)
		last, err = l.Deliver(ctx, after, o, r)
	}()
	return func() (uint64, error) { <-done; return last, err }
}

// checkAll checks that frames hold every entry after `after` exactly once,
// in order, and end with Done.
func checkAll(t *testing.T, l *Log, after uint64, frames []frame) {
	t.Helper()
	var got []uint64
	for _, f := range frames {
		got = append(got, f.seqs...)
	}
	var want []uint64
	for s := after + 1; s <= l.Last(); s++ {
		want = append(want, s)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("delivered seqs %v, want %v", got, want)
	}
	if last := frames[len(frames)-1]; last.kind[len(last.kind)-1] != Done {
		t.Fatalf("last frame %+v does not end with Done", last)
	}
}

// TestDeliverUnpaced: with zero Options every entry goes out the moment it
// is appended, everything pending in one frame.
func TestDeliverUnpaced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var l Log
		r := &recorder{start: time.Now()}
		l.Append(Entry{Kind: Start})
		wait := deliver(t.Context(), &l, 0, Options{}, r)
		for i := range 5 {
			time.Sleep(10 * time.Millisecond)
			l.Append(tok(2*i), tok(2*i+1))
		}
		time.Sleep(10 * time.Millisecond)
		finish(&l)
		if last, err := wait(); err != nil || last != l.Last() {
			t.Fatalf("Deliver = %d, %v; want %d, nil", last, err, l.Last())
		}
		checkAll(t, &l, 0, r.frames)
		if len(r.frames) != 7 {
			t.Fatalf("%d frames, want 7 (start, five pairs, the end)", len(r.frames))
		}
		for i, f := range r.frames {
			if want := time.Duration(i) * 10 * time.Millisecond; f.at != want {
				t.Errorf("frame %d at %v, want %v (when appended)", i, f.at, want)
			}
		}
	})
}

// TestDeliverPaced: 40 tokens appended at once at 50 tokens/s go out one
// per frame, exactly 20 ms apart; tokens that come slower than the rate go
// out as they come, and do not make a burst after.
func TestDeliverPaced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var l Log
		r := &recorder{start: time.Now()}
		for i := range 40 {
			l.Append(tok(i))
		}
		wait := deliver(t.Context(), &l, 0, Options{Rate: 50}, r)
		time.Sleep(time.Second) // all 40 are out by 780 ms
		// Then slower than the rate: one every 50 ms.
		for i := range 5 {
			l.Append(tok(40 + i))
			time.Sleep(50 * time.Millisecond)
		}
		// Then a burst of 5: paced again from its arrival.
		for i := range 5 {
			l.Append(tok(45 + i))
		}
		finish(&l)
		if _, err := wait(); err != nil {
			t.Fatal(err)
		}
		checkAll(t, &l, 0, r.frames)
		var want []time.Duration
		for i := range 40 {
			want = append(want, time.Duration(i)*20*time.Millisecond)
		}
		for i := range 5 {
			want = append(want, time.Second+time.Duration(i)*50*time.Millisecond)
		}
		burst := time.Second + 250*time.Millisecond
		for i := range 5 {
			want = append(want, burst+time.Duration(i)*20*time.Millisecond)
		}
		var got []time.Duration
		for _, f := range r.frames {
			got = append(got, f.at)
		}
		// The last frame also carries End, Final and Done.
		if !slices.Equal(got, want) {
			t.Errorf("frame times\n got %v\nwant %v", got, want)
		}
	})
}

// TestDeliverMinInterval: tokens every 7 ms with a 100 ms interval go out
// in frames 100 ms apart, 14 tokens each, the first token at once; the
// text is unchanged. (7 ms: no token lands on a frame's time.)
func TestDeliverMinInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var l Log
		r := &recorder{start: time.Now()}
		wait := deliver(t.Context(), &l, 0, Options{MinInterval: 100 * time.Millisecond}, r)
		var text strings.Builder
		for i := range 50 {
			e := tok(i)
			text.WriteString(e.Event.Text)
			l.Append(e)
			time.Sleep(7 * time.Millisecond)
		}
		finish(&l) // at 350 ms
		if _, err := wait(); err != nil {
			t.Fatal(err)
		}
		checkAll(t, &l, 0, r.frames)
		sizes := []int{1, 14, 14, 14, 7 + 3} // the first token at once; the last frame also has End, Final, Done
		if len(r.frames) != len(sizes) {
			t.Fatalf("%d frames, want %d: %+v", len(r.frames), len(sizes), r.frames)
		}
		var got strings.Builder
		for i, f := range r.frames {
			got.WriteString(f.text)
			if want := time.Duration(i) * 100 * time.Millisecond; f.at != want || len(f.seqs) != sizes[i] {
				t.Errorf("frame %d: %d entries at %v; want %d at %v", i, len(f.seqs), f.at, sizes[i], want)
			}
		}
		if got.String() != text.String() {
			t.Errorf("text %q, want %q", got.String(), text.String())
		}
	})
}

// TestDeliverPacedAndCoalesced: 50 tokens/s in frames at least 100 ms
// apart is five tokens per frame.
func TestDeliverPacedAndCoalesced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var l Log
		r := &recorder{start: time.Now()}
		for i := range 21 {
			l.Append(tok(i))
		}
		finish(&l)
		if _, err := l.Deliver(t.Context(), 0, Options{Rate: 50, MinInterval: 100 * time.Millisecond}, r); err != nil {
			t.Fatal(err)
		}
		checkAll(t, &l, 0, r.frames)
		sizes := []int{1, 5, 5, 5, 5 + 3} // the first token at once; the last frame also has End, Final, Done
		if len(r.frames) != len(sizes) {
			t.Fatalf("%d frames, want %d: %+v", len(r.frames), len(sizes), r.frames)
		}
		for i, f := range r.frames {
			if f.at != time.Duration(i)*100*time.Millisecond || len(f.seqs) != sizes[i] {
				t.Errorf("frame %d: %d entries at %v; want %d at %v", i, len(f.seqs), f.at, sizes[i], time.Duration(i)*100*time.Millisecond)
			}
		}
	})
}

// TestDeliverKeepAlive: with nothing to send, a keepalive goes out every
// interval, and also between slow paced tokens.
func TestDeliverKeepAlive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var l Log
		r := &recorder{start: time.Now()}
		wait := deliver(t.Context(), &l, 0, Options{KeepAlive: time.Second, Rate: 0.4}, r)
		time.Sleep(3500 * time.Millisecond) // queued: keepalives at 1, 2, 3 s
		l.Append(tok(0), tok(1))            // 2.5 s apart: keepalives at 4.5, 5.5 s
		finish(&l)
		if _, err := wait(); err != nil {
			t.Fatal(err)
		}
		want := []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 4500 * time.Millisecond, 5500 * time.Millisecond}
		if !slices.Equal(r.keepalive, want) {
			t.Errorf("keepalives at %v, want %v", r.keepalive, want)
		}
		if len(r.frames) != 2 || r.frames[1].at != 6*time.Second {
			t.Errorf("frames %+v; want two, the second at 6s", r.frames)
		}
	})
}

// TestDeliverResume: a reader that starts after entry k gets exactly the
// entries after k, then the live rest; one past the end is an error; after
// the Done entry there is nothing.
func TestDeliverResume(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var l Log
		l.Append(Entry{Kind: Start})
		for i := range 10 {
			l.Append(tok(i))
		}
		r := &recorder{start: time.Now()}
		wait := deliver(t.Context(), &l, 7, Options{}, r)
		time.Sleep(time.Millisecond)
		l.Append(tok(10))
		finish(&l)
		if _, err := wait(); err != nil {
			t.Fatal(err)
		}
		checkAll(t, &l, 7, r.frames)
		if _, err := l.Deliver(t.Context(), l.Last()+1, Options{}, r); !errors.Is(err, ErrAhead) {
			t.Errorf("Deliver past the end = %v, want ErrAhead", err)
		}
		r2 := &recorder{start: time.Now()}
		if last, err := l.Deliver(t.Context(), l.Last(), Options{}, r2); err != nil || last != l.Last() || len(r2.frames) != 0 {
			t.Errorf("Deliver after Done = %d, %v, %d frames; want %d, nil, none", last, err, len(r2.frames), l.Last())
		}
	})
}

// TestDeliverEnds: a done context or a failing sink ends delivery with its
// error and the position reached.
func TestDeliverEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var l Log
		l.Append(tok(0), tok(1))
		ctx, cancel := context.WithCancel(t.Context())
		r := &recorder{start: time.Now()}
		wait := deliver(ctx, &l, 0, Options{KeepAlive: time.Second}, r)
		time.Sleep(time.Millisecond)
		cancel()
		if last, err := wait(); !errors.Is(err, context.Canceled) || last != 2 {
			t.Errorf("canceled: Deliver = %d, %v; want 2, context.Canceled", last, err)
		}

		r = &recorder{start: time.Now(), failAfter: 1}
		wait = deliver(t.Context(), &l, 0, Options{}, r)
		time.Sleep(time.Millisecond)
		l.Append(tok(2))
		if last, err := wait(); !errors.Is(err, errSink) || last != 2 {
			t.Errorf("failing sink: Deliver = %d, %v; want 2, the sink's error", last, err)
		}
	})
}

// TestLogRead covers Read's batches and its wake-up channel, and Range.
func TestLogRead(t *testing.T) {
	var l Log
	for i := range 5 {
		l.Append(tok(i))
	}
	wake := make(chan struct{}, 1)
	got, more, err := l.Read(nil, 1, 2, wake)
	if err != nil || len(got) != 2 || got[0].Seq != 2 || !more {
		t.Fatalf("Read(after 1, max 2) = %v, %v, %v", got, more, err)
	}
	select {
	case <-wake:
		t.Fatal("wake signaled for a reader that did not read everything")
	default:
	}
	got, more, err = l.Read(got[:0], 3, 0, wake)
	if err != nil || len(got) != 2 || !more {
		t.Fatalf("Read(after 3) = %v, %v, %v", got, more, err)
	}
	l.Read(got[:0], 3, 0, wake) // registered once, however often it asks
	if n := len(l.waiters); n != 1 {
		t.Fatalf("%d waiters, want 1", n)
	}
	select {
	case <-wake:
		t.Fatal("wake signaled before an append")
	default:
	}
	l.Append(tok(5))
	select {
	case <-wake:
	default:
		t.Fatal("wake not signaled by an append")
	}
	if allocs := testing.AllocsPerRun(100, func() {
		got, _, _ = l.Read(got[:0], l.Last(), 0, wake)
		l.Append(Entry{Kind: Token})
		<-wake
	}); allocs > 1 { // the entries' slice grows now and then
		t.Errorf("a read, an append and a wake-up allocate %v times; want none", allocs)
	}
	finish(&l)
	if _, more, _ := l.Read(nil, l.Last(), 0, wake); more {
		t.Error("a done log still offers more")
	}
	var seqs []uint64
	l.Range(3, func(e *Entry) bool { seqs = append(seqs, e.Seq); return true })
	if !slices.Equal(seqs, []uint64{1, 2, 3}) {
		t.Errorf("Range(3) visited %v", seqs)
	}
	if !l.Done() || l.Bytes() <= 0 {
		t.Errorf("Done %v, Bytes %d", l.Done(), l.Bytes())
	}
	defer func() {
		if recover() == nil {
			t.Error("Append after Done did not panic")
		}
	}()
	l.Append(tok(9))
}
