package lifecycle

import (
	"os"
	"strconv"
	"testing"
)

func TestDetect(t *testing.T) {
	me := strconv.Itoa(os.Getpid())
	other := strconv.Itoa(os.Getpid() + 1)
	tests := []struct {
		name                                    string
		daemonized, notify, invocation, execPID string
		want                                    Manager
	}{
		{"Nothing", "", "", "", "", Foreground},
		{"NotifySocket", "", "/run/systemd/notify", "", "", Systemd},
		{"AbstractNotifySocket", "", "@/org/freedesktop/systemd1/notify/123", "", "", Systemd},
		{"InvocationID", "", "", "0123456789abcdef0123456789abcdef", "", Systemd},
		{"ExecPIDIsUs", "", "", "", me, Systemd},
		{"ExecPIDIsAnother", "", "", "", other, Foreground},
		{"ExecPIDMalformed", "", "", "", "x" + me, Foreground},
		{"Daemonized", "1", "", "", "", Classic},
		{"DaemonizedOtherValue", "yes", "", "", "", Foreground},
		// `jobdaemon start` run from a unit: the forked daemon inherits
		// the unit's variables but reports to `start`.
		{"DaemonizedInUnit", "1", "", "0123456789abcdef0123456789abcdef", other, Classic},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(EnvDaemonized, tt.daemonized)
			t.Setenv("NOTIFY_SOCKET", tt.notify)
			t.Setenv("INVOCATION_ID", tt.invocation)
			t.Setenv("SYSTEMD_EXEC_PID", tt.execPID)
			if got := Detect(); got != tt.want {
				t.Errorf("Detect() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestManagerString(t *testing.T) {
	for m, want := range map[Manager]string{
		Foreground:  "foreground",
		Systemd:     "systemd",
		Classic:     "classic",
		Manager(42): "Manager(42)",
	} {
		if got := m.String(); got != want {
			t.Errorf("Manager(%d).String() = %q, want %q", int(m), got, want)
		}
	}
}
