package kernels

// The arm64 assembly is generated on any host (the amd64 directive lives
// in matmul_amd64.go, which only amd64 hosts read).
//go:generate go run ./internal/neongen -o neon_arm64.s
