// Package kernels holds the numeric inner loops of inference on the CPU:
// dot products and matrix–vector/matrix products over weights in their
// stored element types (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K;
// [MatMul] quantizes the activations to 8-bit blocks for the quantized
// weight types and multiplies in integers, as llama.cpp does), RMSNorm,
// softmax, SwiGLU, rotary embeddings, and a persistent worker [Pool] to
// run them in parallel.
//
// Each kernel's doc comment gives its reference loop: the plain Go that
// defines what it computes. The portable implementations live in
// kernels_generic.go and matmul_*.go; where the CPU allows, init swaps in
// assembly ([Implementation] names the set in use: on amd64 "avx2", or
// "avx512vnni" where AVX-512 VNNI is available; on arm64 "neon", or
// "neondot" where the ARMv8.2 dot product instructions are), and building
// with -tags noasm keeps the portable ones. Package kerneltest checks any
// implementation against float64 reference loops and the quant package's
// scalar (de)quantizers; every set the CPU can run is tested with it.
//
// Kernels panic on shape mismatches, which are programmer errors: shapes are
// validated once, when a model is loaded, not per call. Hot-path functions
// do not allocate.
package kernels
