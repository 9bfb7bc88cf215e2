package lifecycle

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/jobdaemon/jobdaemon/internal/suggest"
)

// MaxSignal is the highest signal number on Linux (SIGRTMAX).
const MaxSignal = 64

// ParseSignal reads a signal the way an operator writes one: a name with
// or without "SIG", in any case ("SIGTERM", "term"), or a number from 1 to
// MaxSignal (the real-time signals have no names here). The error says
// what to write instead, with the closest name for a misspelt one.
func ParseSignal(s string) (syscall.Signal, error) {
	str := s
	if n, err := strconv.Atoi(str); err == nil {
		if n < 1 || n > MaxSignal {
			return 0, fmt.Errorf("signal number %d is out of range: use 1 to %d or a name such as \"SIGTERM\"", n, MaxSignal)
		}
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(str)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if n := unix.SignalNum(name); n != 0 {
		return n, nil
	}
	if best := suggest.Closest(name, signalNames()); best != "" {
		return 0, fmt.Errorf("unknown signal %q (did you mean %q?)", str, best)
	}
	return 0, fmt.Errorf("unknown signal %q: use a name such as \"SIGTERM\" or a number", str)
}

// SignalName returns the name of sig ("SIGTERM"), or its number when it
// has none.
func SignalName(sig syscall.Signal) string {
	if name := unix.SignalName(sig); name != "" {
		return name
	}
	return strconv.Itoa(int(sig))
}

func signalNames() []string {
	var names []string
	for n := 1; n < 32; n++ {
		if nm := unix.SignalName(syscall.Signal(n)); nm != "" {
			names = append(names, nm)
		}
	}
	return names
}
