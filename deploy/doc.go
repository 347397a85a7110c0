// Package deploy holds Spigot's Kubernetes manifests (kustomize), the
// Prometheus Adapter values, the Grafana dashboard and the Dockerfile; see
// README.md beside this file. It has no Go API: its tests decode every
// manifest strictly into the Kubernetes API types and check what the
// manifests refer to (selectors, ports, probes, the flags of spigot serve,
// metric names), so that a typo fails `go test ./deploy`.
package deploy
