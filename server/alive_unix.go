//go:build linux || darwin || freebsd || netbsd || openbsd

package server

import (
	"errors"
	"net"
	"syscall"
)

// peerAlive returns a probe that tells whether the client of c is still
// connected, or nil when c is not a socket (in-memory listeners). fasthttp
// gives a handler no close notification, so while a request waits for
// tokens the server peeks at the socket: a FIN (read of 0 bytes) or a reset
// means the client is gone. MSG_PEEK consumes nothing, so a pipelined next
// request stays for fasthttp to read. The probe must not be called
// concurrently with itself.
func peerAlive(c net.Conn) func() bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	var buf [1]byte
	return func() bool {
		alive := true
		err := rc.Read(func(fd uintptr) bool {
			n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			switch {
			case n > 0, err == syscall.EAGAIN, err == syscall.EINTR:
				alive = true
			default: // 0 bytes without error is EOF; other errors are resets
				alive = false
			}
			return true // never wait for readability
		})
		if errors.Is(err, net.ErrClosed) {
			return false
		}
		return alive // other errors (a past read deadline): unknown, assume alive
	}
}
