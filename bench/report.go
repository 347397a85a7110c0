package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// WriteText writes r as a readable report: the run's settings, a table
// of latency percentiles, the throughput figures and the errors.
func (r *Result) WriteText(w io.Writer) error {
	var b strings.Builder
	model := r.Model
	if model == "" {
		model = "(none named)"
	}
	fmt.Fprintf(&b, "%s  api %s  model %s\n", r.URL, r.API, model)
	prompt := "estimated"
	if r.PromptCalibrated {
		prompt = "measured by the server"
	}
	fmt.Fprintf(&b, "%d requests, %d at a time; prompt %d tokens (%s), max_tokens %d\n", r.Requests, r.Concurrency, r.PromptTokens, prompt, r.MaxTokens)
	if r.PromptNote != "" {
		fmt.Fprintf(&b, "prompt %s\n", r.PromptNote)
	}
	if r.Stopped != "" {
		fmt.Fprintf(&b, "STOPPED EARLY (%s): partial results\n", r.Stopped)
	}
	fmt.Fprintf(&b, "sent %d, completed %d, errors %d, rate-limited (429) %d", r.Sent, r.Completed, r.Errors, r.RateLimited)
	if r.Cancelled > 0 {
		fmt.Fprintf(&b, ", cancelled %d", r.Cancelled)
	}
	fmt.Fprintf(&b, "; wall time %.2f s\n\n", r.WallSeconds)

	fmt.Fprintf(&b, "%-26s %6s %9s %9s %9s %9s %9s %9s\n", "", "n", "mean", "p50", "p90", "p99", "min", "max")
	row := func(name string, d Dist) {
		fmt.Fprintf(&b, "%-26s %6d %9.2f %9.2f %9.2f %9.2f %9.2f %9.2f\n", name, d.N, d.Mean, d.P50, d.P90, d.P99, d.Min, d.Max)
	}
	row("TTFT (ms)", r.TTFT)
	row("inter-token latency (ms)", r.ITL)
	row("chunk gap (ms)", r.ChunkGap)
	row("end-to-end latency (ms)", r.E2E)
	row("stream tokens/s", r.StreamTokensPerSecond)

	fmt.Fprintf(&b, "\noutput tokens/s    %.2f  (%d completion tokens / %.2f s)\n", r.OutputTokensPerSecond, r.CompletionTokens, r.WallSeconds)
	fmt.Fprintf(&b, "requests/s         %.3f\n", r.RequestsPerSecond)
	fmt.Fprintf(&b, "tokens per chunk   %.2f", r.TokensPerChunk)
	if r.UsageMissing > 0 {
		fmt.Fprintf(&b, "  (%d streams reported no usage: a chunk counted as a token)", r.UsageMissing)
	}
	fmt.Fprintf(&b, "\nserver prompt tokens %.1f per request (with BOS and template)\n", r.ServerPromptTokens)
	if r.Completed > 0 && r.MaxTokens > 0 {
		if per := float64(r.CompletionTokens) / float64(r.Completed); per < float64(r.MaxTokens) {
			fmt.Fprintf(&b, "note: streams generated %.1f tokens on average, fewer than max_tokens %d (end of generation not ignored, or the context full?)\n", per, r.MaxTokens)
		}
	}
	if len(r.ErrorKinds) > 0 {
		fmt.Fprintf(&b, "\nerrors by kind:")
		kinds := make([]string, 0, len(r.ErrorKinds))
		for k := range r.ErrorKinds {
			kinds = append(kinds, k)
		}
		slices.Sort(kinds)
		for _, k := range kinds {
			fmt.Fprintf(&b, " %s %d", k, r.ErrorKinds[k])
		}
		fmt.Fprintln(&b)
		for _, s := range r.ErrorSamples {
			fmt.Fprintf(&b, "  %s\n", s)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
