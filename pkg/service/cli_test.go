package service

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
)

// cliApp is an application whose settings put everything in a temporary
// directory; configErr makes Configure fail.
type cliApp struct {
	dir       string
	configErr error
	commands  []string // what Configure was asked for
	files     []string
}

func (a *cliApp) NextJob(context.Context, int) (*jobs.Job, error) { return nil, nil }
func (a *cliApp) RunJob(context.Context, *jobs.Job) error         { return nil }

func (a *cliApp) Configure(_ context.Context, s *Settings) error {
	a.commands = append(a.commands, s.Command)
	a.files = append(a.files, s.ConfigFile)
	if a.configErr != nil {
		return a.configErr
	}
	s.Daemon.PIDFile = filepath.Join(a.dir, "demo.pid")
	s.Control.Socket = filepath.Join(a.dir, "control.sock")
	return nil
}

// cli runs a command line of a program called demo and returns its exit
// code, stdout and stderr.
func cli(t *testing.T, app jobs.Source, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	s := newService(app, Options{Name: "demo", Version: "1.2.3", Args: args, Stdout: &out, Stderr: &errOut})
	return s.execute(), out.String(), errOut.String()
}

func TestCLI(t *testing.T) {
	t.Setenv("DEMO_CONFIG", "")
	a := &cliApp{dir: t.TempDir()}
	for _, tt := range []struct {
		args      []string
		code      int
		out, err_ string
	}{
		{nil, ExitUsage, "", "Usage: demo"},
		{[]string{"nonsense"}, ExitUsage, "", `unknown command "nonsense"`},
		{[]string{"--version"}, ExitOK, "demo 1.2.3", ""},
		{[]string{"version"}, ExitOK, "demo 1.2.3", ""},
		{[]string{"status", "--help"}, ExitOK, "Usage: demo status [--json]", ""},
		{[]string{"status", "--bogus"}, ExitUsage, "", "unknown flag: --bogus"},
		{[]string{"status", "extra"}, ExitUsage, "", `unknown command "extra"`},
		{[]string{"status"}, ExitNotRunning, "demo is not running", ""},
		{[]string{"stop", "--drain", "--now"}, ExitUsage, "", "opposites"},
		{[]string{"reload"}, ExitNotRunning, "", "no daemon is running"},
		{[]string{"scale", "-1"}, ExitNotRunning, "", "no daemon is running"},
		{[]string{"scale", "+2", "--config", "x.toml"}, ExitNotRunning, "", "no daemon is running"},
		{[]string{"scale", "0"}, ExitUsage, "", "want a size of at least 1"},
		{[]string{"scale"}, ExitUsage, "", "give one number"},
		{[]string{"scale", "--help"}, ExitOK, "Usage: demo scale N|+N|-N", ""},
		{[]string{"signal"}, ExitUsage, "", "accepts between 1 and 2 arg"},
		{[]string{"signal", "job", "SIGTREM"}, ExitUsage, "", `did you mean "SIGTERM"`},
	} {
		code, out, errOut := cli(t, a, tt.args...)
		if code != tt.code || !strings.Contains(out, tt.out) || !strings.Contains(errOut, tt.err_) {
			t.Errorf("demo %v: exit %d, stdout %q, stderr %q; want %d, %q, %q", tt.args, code, out, errOut, tt.code, tt.out, tt.err_)
		}
	}
	// --config reaches Configure, anywhere on the line, and defaults to
	// DEMO_CONFIG, then /etc/demo/config.toml.
	a.files = nil
	cli(t, a, "status", "--config", "one.toml")
	cli(t, a, "--config", "two.toml", "status")
	cli(t, a, "status")
	t.Setenv("DEMO_CONFIG", "three.toml")
	cli(t, a, "status")
	want := []string{"one.toml", "two.toml", "/etc/demo/config.toml", "three.toml"}
	if strings.Join(a.files, " ") != strings.Join(want, " ") {
		t.Errorf("config files %q, want %q", a.files, want)
	}
}

// Settings the daemon cannot use stop it with 78 before it opens anything;
// a client command gets them too, with its own name as Command.
func TestCLIConfigErrors(t *testing.T) {
	a := &cliApp{dir: t.TempDir(), configErr: errors.New("config.toml:3: pool.max_children: out of range")}
	code, _, errOut := cli(t, a, "run")
	if code != ExitConfig || !strings.Contains(errOut, "config.toml:3: pool.max_children") {
		t.Errorf("run: exit %d, %q", code, errOut)
	}
	code, _, errOut = cli(t, a, "reload")
	if code != ExitConfig || !strings.Contains(errOut, "invalid configuration") {
		t.Errorf("reload: exit %d, %q", code, errOut)
	}
	if strings.Join(a.commands, " ") != "run reload" {
		t.Errorf("Configure asked for %q", a.commands)
	}
	// The service's own checks of what Configure set.
	b := &badSettings{}
	code, _, errOut = cli(t, b, "run")
	if code != ExitConfig || !strings.Contains(errOut, "pool.max_children: 0 is out of range") {
		t.Errorf("run with max_children 0: exit %d, %q", code, errOut)
	}
}

type badSettings struct{ cliApp }

func (b *badSettings) Configure(_ context.Context, s *Settings) error {
	s.Pool.MaxChildren = 0
	return nil
}
