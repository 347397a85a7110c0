package chat

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nikolalohinski/gonja/v2/exec"
	"github.com/nikolalohinski/gonja/v2/nodes"
	"github.com/nikolalohinski/gonja/v2/tokens"
)

// limits bound one Render. The package doc lists them for users.
type limits struct {
	timeout    time.Duration
	steps      int // loop iterations plus macro calls
	depth      int // nested macro calls
	baseOutput int // output allowed whatever the input...
	perInput   int // ...plus this many bytes per byte of message text
}

var defaultLimits = limits{
	timeout:    2 * time.Second,
	steps:      1 << 20,
	depth:      64,
	baseOutput: 1 << 20,
	perInput:   4,
}

// maxRange is the most numbers range() gives, as in Jinja's sandbox
// (jinja2.sandbox.MAX_RANGE).
const maxRange = 100_000

// stateKey is the context name under which a render's state travels, so
// that guards deep in the engine can find it. It is not an identifier, so
// no template can read or replace it.
const stateKey = "spigot chat render state"

// renderState is one Render's budget. A render runs on one goroutine, so
// it needs no locking.
type renderState struct {
	lim       limits
	deadline  time.Time
	start     time.Time // what strftime_now reports
	steps     int
	depth     int
	written   int
	maxOutput int
	// err is the first limit hit or exception raised. Once set, every
	// check fails, so the engine cannot carry on past it even where it
	// swallows errors.
	err error
}

// newRenderState starts a render's budget. input is the size of the
// messages; clock is what strftime_now reports.
func newRenderState(lim limits, input int, clock time.Time) *renderState {
	maxOut := lim.baseOutput
	if input < (1<<40)/max(lim.perInput, 1) { // no overflow
		maxOut += lim.perInput * input
	}
	return &renderState{lim: lim, deadline: time.Now().Add(lim.timeout), start: clock, maxOutput: maxOut}
}

func stateOf(ctx *exec.Context) *renderState {
	v, ok := ctx.Get(stateKey)
	if !ok {
		return nil
	}
	st, _ := v.(*renderState)
	return st
}

func (st *renderState) fail(err error) error {
	if st.err == nil {
		st.err = err
	}
	return st.err
}

// step counts one loop iteration or macro call.
func (st *renderState) step() error {
	if st.err != nil {
		return st.err
	}
	st.steps++
	if st.steps > st.lim.steps {
		return st.fail(fmt.Errorf("more than %d loop iterations and macro calls: %w", st.lim.steps, ErrLimit))
	}
	return st.checkTime()
}

func (st *renderState) checkTime() error {
	if time.Now().After(st.deadline) {
		return st.fail(fmt.Errorf("ran over %v: %w", st.lim.timeout, ErrLimit))
	}
	return nil
}

// enter and leave bracket a macro call.
func (st *renderState) enter() error {
	if err := st.step(); err != nil {
		return err
	}
	st.depth++
	if st.depth > st.lim.depth {
		st.depth--
		return st.fail(fmt.Errorf("macro calls nested more than %d deep: %w", st.lim.depth, ErrLimit))
	}
	return nil
}

func (st *renderState) leave() { st.depth-- }

// raiseException is raise_exception(message), as transformers defines it.
func (st *renderState) raiseException(args *exec.VarArgs) *exec.Value {
	msg := ""
	if len(args.Args) > 0 {
		msg = args.Args[0].String()
	}
	return exec.AsValue(st.fail(&RaiseError{Message: msg}))
}

// strftimeNow is strftime_now(format): the render's start time formatted
// like Python's datetime.strftime. Llama 3.x templates print today's date.
func (st *renderState) strftimeNow(args *exec.VarArgs) *exec.Value {
	if len(args.Args) != 1 || !args.Args[0].IsString() {
		return exec.AsValue(errors.New("strftime_now takes one string argument"))
	}
	return exec.AsValue(strftime(st.start, args.Args[0].String()))
}

// limitWriter is where the rendered prompt goes; it enforces the output
// cap and the deadline.
type limitWriter struct {
	st *renderState
	w  io.Writer
}

func (lw *limitWriter) Write(p []byte) (int, error) {
	st := lw.st
	if st.err != nil {
		return 0, st.err
	}
	if len(p) > st.maxOutput-st.written {
		return 0, st.fail(fmt.Errorf("output over %d bytes: %w", st.maxOutput, ErrLimit))
	}
	if err := st.checkTime(); err != nil {
		return 0, err
	}
	st.written += len(p)
	return lw.w.Write(p)
}

// stepNode is the control structure guardFor puts first in every loop body.
type stepNode struct {
	loc *tokens.Token
}

func (s stepNode) Position() *tokens.Token { return s.loc }
func (s stepNode) String() string          { return "step" }

func (s stepNode) Execute(r *exec.Renderer, _ *nodes.ControlStructureBlock) error {
	if st := stateOf(r.Environment.Context); st != nil {
		return st.step()
	}
	return nil
}

// rangeFunc is Python's range as a list, at most maxRange long. (gonja's
// own feeds a channel from a goroutine that leaks when a loop stops early.)
func (st *renderState) rangeFunc(args *exec.VarArgs) *exec.Value {
	if len(args.KwArgs) > 0 || len(args.Args) < 1 || len(args.Args) > 3 {
		return exec.AsValue(errors.New("range expects 1 to 3 integer arguments"))
	}
	n := make([]int, len(args.Args))
	for i, a := range args.Args {
		if !a.IsInteger() {
			return exec.AsValue(fmt.Errorf("range: argument %d is not an integer", i+1))
		}
		n[i] = a.Integer()
	}
	start, stop, step := 0, n[0], 1
	if len(n) > 1 {
		start, stop = n[0], n[1]
	}
	if len(n) > 2 {
		step = n[2]
	}
	if step == 0 {
		return exec.AsValue(errors.New("range: step must not be zero"))
	}
	var span, stride uint64 // exact even where stop-start overflows int
	switch {
	case step > 0 && stop > start:
		span, stride = uint64(stop-start), uint64(step)
	case step < 0 && stop < start:
		span, stride = uint64(start-stop), -uint64(step)
	}
	count := uint64(0)
	if stride > 0 {
		count = span / stride
		if span%stride != 0 {
			count++
		}
	}
	if count > maxRange {
		return exec.AsValue(st.fail(fmt.Errorf("range() of more than %d items: %w", maxRange, ErrLimit)))
	}
	out := make([]int, count)
	for i := range out {
		out[i] = start + i*step
	}
	return exec.AsValue(out)
}
