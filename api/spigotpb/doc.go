// Package spigotpb holds Spigot's protobuf definitions: spigot/v1 is the
// gRPC API (spigot.v1.Generation) that the server serves with
// --grpc-addr. The .pb.go files are generated and committed, so builds
// need no protoc; regenerate them after editing a .proto with
//
//	go generate ./api/spigotpb
//
// which runs gen.sh: protoc (Debian's protobuf-compiler) with
// protoc-gen-go and protoc-gen-go-grpc at pinned versions. CI regenerates
// them and fails if the committed files differ.
package spigotpb

//go:generate sh gen.sh
