package main

import (
	"bytes"
	"os"
	"testing"
)

// TestGenerated checks that the committed kernels/tile_amd64.s is this
// program's output (run go generate in kernels after changing it).
func TestGenerated(t *testing.T) {
	got, err := os.ReadFile("../../tile_amd64.s")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, Generate()) {
		t.Error("kernels/tile_amd64.s is stale: run go generate ./kernels")
	}
}
