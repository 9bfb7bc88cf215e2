package service

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	"github.com/jobdaemon/jobdaemon/internal/control"
	"github.com/jobdaemon/jobdaemon/pkg/jobs"
	"github.com/jobdaemon/jobdaemon/pkg/lifecycle"
)

// Options describe the program to Main. The zero value is usable: the
// program is named after its executable and has the default settings.
type Options struct {
	// Name names the program: in the usage text, as the syslog identifier
	// of the daemon's lines, in the default paths (/run/NAME/NAME.pid,
	// /run/NAME/control.sock), and in NAME_CONFIG, the environment
	// variable that gives --config a default. Default: the base name of
	// os.Args[0].
	Name string
	// Version is what --version and "version" print. Default: the module
	// version the binary was built from, or "dev".
	Version string
	// Summary says in a line what the program does, for --help.
	Summary string
	// ConfigFile is the default of --config when NAME_CONFIG is not set;
	// "" means /etc/NAME/config.toml. The service reads no file itself: it
	// hands the name to the Configure hook.
	ConfigFile string
	// Settings are the settings before Configure; nil means
	// Defaults(Name).
	Settings *Settings
	// Jobs are options of package jobs that settings do not cover (an
	// Observer of one's own, MaxHookErrors...). The service sets the pool
	// size, timeouts, signals, logger, output, the hooks it needs
	// (OnReload, OnReady...) and the heartbeat; it calls OnReload,
	// OnReloaded and OnStop given here after its own.
	Jobs jobs.Options
	// Commands are more subcommands, beside run, start, stop, restart,
	// status, reload, scale, pause, resume, signal and version. ConfigFile
	// returns their --config.
	Commands []*cobra.Command

	// Args are the command-line arguments without the program name;
	// nil means os.Args[1:]. Stdout and Stderr default to os.Stdout and
	// os.Stderr. For tests.
	Args           []string
	Stdout, Stderr io.Writer
}

// Configurer is an optional hook of the application: it gives the service
// its settings, from the application's own configuration. s holds the
// defaults (Options.Settings), and s.ConfigFile and s.Command
// are filled in. It is called by the daemon at start, before the PID file,
// the control socket and the privilege drop, and on every reload, before
// LoadConfig; and by the client commands, which need only s.Control.Socket
// and s.Daemon.PIDFile (s.Command tells which). It must be quick and open
// nothing: do that in LoadConfig, which only the daemon calls.
type Configurer interface {
	Configure(ctx context.Context, s *Settings) error
}

// Submitter is an optional hook of an application whose source takes new
// jobs: the control socket's POST /v1/jobs calls it in the daemon. It
// returns the new job's id. An error wrapping ErrBadJob is the client's to
// fix (a bad name, a payload over the limit) and is answered with 400.
type Submitter interface {
	Submit(ctx context.Context, id string, payload io.Reader) (string, error)
}

// MaxPayload, when the application has it (func MaxPayload() int64),
// bounds the body of a job submitted through the control socket: larger
// ones are refused with 413 before Submit sees them.

// FailedCounter is an optional hook of a source that counts the jobs it
// filed as failed since the start, those it refused without running them
// included. "run --drain" exits 1 when it is not 0.
type FailedCounter interface {
	Failed() int
}

// JobCounter is an optional hook of an application whose source counts
// its jobs by state ("available", "running", "failed"...), beyond the
// number waiting that jobs.Depther gives: "status" shows the counts, and
// /metrics exports them as jobdaemon_source_jobs{state}. For a queue that
// several daemons share, they are the queue's, not this daemon's.
// CountJobs is called at each status request and scrape, never on the
// dispatcher goroutine, with a context that ends after a second; an error
// leaves the counts out of that answer.
type JobCounter interface {
	CountJobs(ctx context.Context) (map[string]int64, error)
}

// ErrBadJob marks a submitted job that the source refuses for what it is.
var ErrBadJob = control.ErrBadRequest

// Exit codes of the program's commands. 3 and 4 are what LSB init scripts
// use for "not running" and "unknown" (status); 78 is EX_CONFIG from
// sysexits.h, which systemd shows as "status=78/CONFIG".
const (
	ExitOK         = 0
	ExitFailure    = 1  // the daemon refused or failed, or a job failed (run --drain)
	ExitUsage      = 2  // bad flags or arguments
	ExitNotRunning = 3  // no daemon answers on the control socket
	ExitNoAccess   = 4  // the socket, or the daemon, refused this user
	ExitSoftware   = 70 // an internal error
	ExitConfig     = 78 // the configuration is invalid
)

// ExitError ends a command with an exit code. Its message, if any, has
// been printed already.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// Exit returns an *ExitError for code, or nil for ExitOK: what a command
// of Options.Commands returns after printing its own messages.
func Exit(code int) error {
	if code == ExitOK {
		return nil
	}
	return &ExitError{Code: code}
}

// Main turns the program into a service: it reads the subcommand and its
// flags from the command line, runs it, and returns the exit code for
// os.Exit. For "run" that is after the daemon has stopped and every child
// has ended, so that main can clean up; the other commands return at
// once.
//
// Call it first thing in main: in the intermediate process of "start" it
// starts the daemon and exits, and in a child that the daemon started to
// run jobs (this program re-executed), it runs them and exits. It never
// returns in either.
func Main(app jobs.Source, opts Options) int {
	lifecycle.ContinueDaemonize()
	if jobs.IsChild() {
		runChild(app, opts)
	}
	s := newService(app, opts)
	return s.execute()
}

// service is one run of Main.
type service struct {
	app    jobs.Source
	opts   Options
	name   string
	stdout io.Writer
	stderr io.Writer
}

func newService(app jobs.Source, opts Options) *service {
	s := &service{app: app, opts: opts, name: opts.Name, stdout: opts.Stdout, stderr: opts.Stderr}
	if s.name == "" {
		s.name = filepath.Base(os.Args[0])
	}
	if s.stdout == nil {
		s.stdout = os.Stdout
	}
	if s.stderr == nil {
		s.stderr = os.Stderr
	}
	if s.opts.Version == "" {
		s.opts.Version = buildVersion()
	}
	return s
}

// buildVersion returns the version of the main module, as the go command
// recorded it: a tag, a pseudo-version, or "(devel)" for a build from a
// work tree, which becomes "dev".
func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// runChild runs the jobs of a child process and exits.
func runChild(app jobs.Source, opts Options) {
	d, err := jobs.New(app, opts.Jobs)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(ExitSoftware)
	}
	_ = d.Run(context.Background()) // exits
	os.Exit(ExitSoftware)
}

// defaultConfigFile is the default of --config: NAME_CONFIG, or
// Options.ConfigFile, or /etc/NAME/config.toml.
func (s *service) defaultConfigFile() string {
	env := strings.ToUpper(strings.Map(func(r rune) rune {
		if r == '-' || r == '.' {
			return '_'
		}
		return r
	}, s.name)) + "_CONFIG"
	if v := os.Getenv(env); v != "" {
		return v
	}
	if s.opts.ConfigFile != "" {
		return s.opts.ConfigFile
	}
	return "/etc/" + s.name + "/config.toml"
}

// settings returns the settings for command: the defaults, then what the
// Configure hook sets. The daemon's ("run") are validated too.
func (s *service) settings(ctx context.Context, command, configFile string) (Settings, error) {
	st := Defaults(s.name)
	if s.opts.Settings != nil {
		st = *s.opts.Settings
	}
	st.ConfigFile, st.Command = configFile, command
	if c, ok := s.app.(Configurer); ok {
		if err := c.Configure(ctx, &st); err != nil {
			return st, err
		}
	}
	if command == "run" {
		if err := st.Validate(); err != nil {
			return st, err
		}
	}
	return st, nil
}
