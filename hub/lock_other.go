//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly || windows)

package hub

import "context"

// lock does nothing on systems without flock or Windows' exclusive
// opens: concurrent downloads of one file there may corrupt its .part
// (the checksum then catches it).
func lock(ctx context.Context, path string, waiting func()) (unlock func(), err error) {
	return func() {}, nil
}
