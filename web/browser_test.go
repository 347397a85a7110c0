package web

// The page's tests in a real browser. These helpers start Debian's chromium
// headless; browser tests skip without it, except in CI.
//
// The browser is driven with github.com/chromedp/chromedp: pure Go, it
// speaks the DevTools protocol to the chromium the system has, over a pipe,
// and depends only on the standard library and its protocol types. It needs
// no driver process (Selenium, Node for Playwright), and it never downloads
// a browser of its own (go-rod fetches one when it finds none).

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
)

// chromiumPath is Debian's chromium, which .ci/run installs.
const chromiumPath = "/usr/bin/chromium"

// needChromium skips the test when chromium is missing, or fails it in CI.
func needChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		const msg = "chromium is required in CI; .ci/run installs it"
		if os.Getenv("CI") != "" {
			t.Fatalf("%s: %v", msg, err)
		}
		t.Skipf("%s: %v", msg, err)
	}
}

// browser is one headless chromium with one tab.
type browser struct {
	ctx context.Context // the tab; actions run on it

	mu      sync.Mutex
	console []chromedp.ConsoleMessage // what the page logged, exceptions included
}

// newBrowser starts chromium with a fresh profile and opens a tab. Cleanup
// closes the browser and waits for its processes to end; it also fails the
// test if the page threw an exception or broke its Content-Security-Policy.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	needChromium(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.NoSandbox, // we may run as root, in a container
		chromedp.DisableGPU,
		// The defaults above already turn off background networking, sync
		// and the first-run page. Without these as well, chromium tries to
		// reach Google's servers and logs errors when it cannot.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.WindowSize(1200, 800),
		// No UserDataDir: chromedp makes a fresh profile directory, and
		// when the browser ends it kills any chromium process still using
		// that directory and removes it.
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc) // waits for the browser to exit
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	// The first action starts the browser and ties it to ctx, so it gets no
	// deadline; the tests bound each wait themselves.
	start := time.Now()
	if err := chromedp.Do(ctx); err != nil {
		cancelTab()
		t.Fatalf("starting %s: %v", chromiumPath, err)
	}
	t.Logf("chromium started in %v", time.Since(start).Round(time.Millisecond))

	b := &browser{ctx: ctx}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range chromedp.Console(ctx) {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.console = append(b.console, m)
			b.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancelTab()
		<-done
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, m := range b.console {
			switch {
			case m.IsException():
				t.Errorf("the page threw: %s", m)
			case strings.Contains(m.Text, "Content Security Policy"):
				t.Errorf("the page broke its Content-Security-Policy: %s", m)
			case m.Type != "debug":
				t.Logf("console %s", m)
			}
		}
	})
	return b
}

// do runs actions, failing the test on error.
func (b *browser) do(t *testing.T, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatal(err)
	}
}

// eval evaluates a JavaScript expression, awaiting it if it is a promise,
// and decodes its JSON value into T.
func eval[T any](t *testing.T, b *browser, js string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluating %.80q: %v", js, err)
	}
	return v
}

// page is what the chat page shows, as the tests read it.
type page struct {
	State        string   `json:"state"`  // body[data-state]: "idle" or "generating"
	Status       string   `json:"status"` // #status
	Answers      int      `json:"answers"`
	Text         string   `json:"text"` // the last assistant message
	Meta         string   `json:"meta"` // its stats line, once it ends
	Errors       []string `json:"errors"`
	TPS          string   `json:"tps"`
	TTFT         string   `json:"ttft"`
	Tokens       string   `json:"tokens"`
	Finish       string   `json:"finish"`
	Model        string   `json:"model"`  // the selected model id
	Notice       string   `json:"notice"` // #model-notice, if shown
	Prompt       string   `json:"prompt"`
	SendDisabled bool     `json:"sendDisabled"`
	StopDisabled bool     `json:"stopDisabled"`
	Elements     int      `json:"elements"` // elements inside message contents: must stay 0
}

const readPage = `(() => {
	const $ = (id) => document.getElementById(id);
	const answers = document.querySelectorAll('.msg.assistant');
	const last = answers[answers.length - 1];
	const notice = $('model-notice');
	return {
		state: document.body.dataset.state,
		status: $('status').textContent,
		answers: answers.length,
		text: last ? last.querySelector('.content').textContent : '',
		meta: last && last.querySelector('.meta') ? last.querySelector('.meta').textContent : '',
		errors: [...document.querySelectorAll('.msg.error .content')].map((e) => e.textContent),
		tps: $('tps').textContent,
		ttft: $('ttft').textContent,
		tokens: $('tokens').textContent,
		finish: $('finish').textContent,
		model: $('model').value,
		notice: notice.hidden ? '' : notice.textContent,
		prompt: $('prompt').value,
		sendDisabled: $('send').disabled,
		stopDisabled: $('stop').disabled,
		elements: document.querySelectorAll('#messages .content *').length,
	};
})()`

func (b *browser) page(t *testing.T) page {
	t.Helper()
	return eval[page](t, b, readPage)
}

// waitPage polls the page until cond holds, failing after timeout.
func (b *browser) waitPage(t *testing.T, timeout time.Duration, what string, cond func(page) bool) page {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		p := b.page(t)
		if cond(p) {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v, still waiting for %s; the page shows %+v", timeout, what, p)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// js quotes a Go value as a JavaScript literal.
func js(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("js(%v): %v", v, err))
	}
	return string(b)
}

// pressEnter presses Enter in the focused element as a keyboard does: a
// keyDown that carries the text "\r", from which the browser makes the
// keypress and the line break unless the page cancels the keydown, then a
// keyUp. (SendKeys sends the text in a separate char event, which inserts
// a line break even when the page canceled the keydown, as no keyboard
// does.)
func pressEnter(mods chromedp.Modifier) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		key := input.DispatchKeyEventParams{
			Type: input.DispatchKeyEventTypeKeyDown, Modifiers: int64(mods),
			Key: "Enter", Code: "Enter", Text: "\r", UnmodifiedText: "\r",
			WindowsVirtualKeyCode: 13, NativeVirtualKeyCode: 13,
		}
		if _, err := cdp.Call(ctx, t, input.DispatchKeyEvent, key); err != nil {
			return err
		}
		key.Type, key.Text, key.UnmodifiedText = input.DispatchKeyEventTypeKeyUp, "", ""
		_, err := cdp.Call(ctx, t, input.DispatchKeyEvent, key)
		return err
	})
}
