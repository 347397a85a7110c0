package hub

import (
	"context"
	"errors"
	"os"
	"syscall"
	"time"
)

// errSharingViolation is Windows' ERROR_SHARING_VIOLATION, which the
// syscall package does not name.
const errSharingViolation syscall.Errno = 32

// lock opens path (creating it) with no sharing allowed, which excludes
// every other open of the file until it is closed, and returns the
// function that closes it. While the file is open elsewhere it calls
// waiting once and retries every lockPoll until it succeeds or ctx is
// done. Windows closes the handle if the process dies.
func lock(ctx context.Context, path string, waiting func()) (unlock func(), err error) {
	name, err := syscall.UTF16PtrFromString(path)
	if err != nil {
		return nil, err
	}
	announced := false
	for {
		h, err := syscall.CreateFile(name, syscall.GENERIC_READ|syscall.GENERIC_WRITE, 0, nil, syscall.OPEN_ALWAYS, syscall.FILE_ATTRIBUTE_NORMAL, 0)
		if err == nil {
			return func() { syscall.CloseHandle(h) }, nil
		}
		if !errors.Is(err, errSharingViolation) && !errors.Is(err, syscall.ERROR_ACCESS_DENIED) {
			return nil, &os.PathError{Op: "open", Path: path, Err: err}
		}
		if !announced {
			announced = true
			waiting()
		}
		select {
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-time.After(lockPoll):
		}
	}
}
