package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is the content of config.toml. Load returns it with the defaults
// filled in, relative paths made absolute and every value checked.
type Config struct {
	// Daemon is the [daemon] table: the process itself.
	Daemon Daemon `toml:"daemon"`
	// Pool is the [pool] table: how many jobs run at once and how they stop.
	Pool Pool `toml:"pool"`
	// Job is the [job] table: the command run for each job.
	Job Job `toml:"job"`
	// Source is the [source] table: where jobs come from.
	Source Source `toml:"source"`
	// Control is the [control] table: the control socket.
	Control Control `toml:"control"`
	// Log is the log table: the daemon's own log and the job log.
	Log Log `toml:"log"`

	file string     // path as given to Load, for errors
	idx  *lineIndex // finds the line of a key in file
}

// Daemon is the [daemon] table.
type Daemon struct {
	// PIDFile is the PID file written and locked by the daemon (default
	// "/run/jobdaemon/jobdaemon.pid"); "" writes none, which suits systemd.
	PIDFile string `toml:"pid_file"`
	// User, if set, is the user (a name or a numeric uid) the daemon drops
	// to after start-up, once the PID file and sockets are open. "" stays as
	// started. It must exist on this host.
	User string `toml:"user"`
	// Group, if set, is the group (a name or a numeric gid) to drop to; ""
	// with User set takes that user's primary group. It must exist.
	Group string `toml:"group"`
	// StopTimeout is how long a graceful stop waits for running jobs before
	// it kills them with SIGKILL (default 30s; must be positive).
	StopTimeout Duration `toml:"stop_timeout"`
	// IdleInterval is the longest the daemon sleeps when no job is ready
	// (default 2s; must be positive).
	IdleInterval Duration `toml:"idle_interval"`

	cred *syscall.Credential // User and Group, resolved by Validate
}

// Pool is the [pool] table.
type Pool struct {
	// MaxChildren is how many jobs run at once, 1 to 10000 (default 4).
	MaxChildren int `toml:"max_children"`
	// JobsPerChild, above 1, makes each child a worker that runs that many
	// jobs before it exits; 1 to 1000000 (default 1). Whether the running
	// program supports worker children is for the caller to check.
	JobsPerChild int `toml:"jobs_per_child"`
	// JobTimeout, if positive, stops a job that runs longer: StopSignal to
	// its process group, then SIGKILL after KillGrace. 0 (the default)
	// means no limit.
	JobTimeout Duration `toml:"job_timeout"`
	// KillGrace is the time from StopSignal to SIGKILL (default 10s; must
	// be positive).
	KillGrace Duration `toml:"kill_grace"`
	// StopSignal is sent to a job's process group on timeout and on a
	// graceful stop (default SIGTERM).
	StopSignal Signal `toml:"stop_signal"`
	// ForwardSignals, if true (the default), sends StopSignal to running
	// jobs on a graceful stop; if false they run on until
	// daemon.stop_timeout and are then killed.
	ForwardSignals bool `toml:"forward_signals"`
}

// Job is the [job] table.
type Job struct {
	// Command is the program and its arguments, run without a shell for
	// each job; required. Command[0] is a path, or a name looked up in PATH
	// when Load runs and replaced by the absolute path found. Arguments
	// that are exactly one of the placeholders ({path}, {name}, {id},
	// {slot}, {attempt}) are replaced per job; a placeholder inside a
	// longer argument ("{path}.png") is an error, since nothing is
	// interpolated. An argument with whitespace inside its braces (an awk
	// program, say) is not taken for a placeholder.
	Command []string `toml:"command"`
	// WorkingDir is the directory jobs run in; "" (the default) is the
	// daemon's own working directory. It must exist.
	WorkingDir string `toml:"working_dir"`
	// Env is added to each job's environment, after InheritEnv. The daemon
	// also sets JOB_ID, JOB_PATH, JOB_SLOT and JOB_ATTEMPT, which Env may not set.
	Env map[string]string `toml:"env"`
	// InheritEnv names variables of the daemon's environment passed on to
	// jobs. By default nothing of the daemon's environment is passed on.
	// systemd's NOTIFY_SOCKET, LISTEN_* and WATCHDOG_* never are.
	InheritEnv []string `toml:"inherit_env"`
	// MaxAttempts is how often a job is tried before it is marked failed,
	// 1 to 1000000 (default 3; 1 means no retries).
	MaxAttempts int `toml:"max_attempts"`
	// Backoff is the delay before the first retry (default 10s); each
	// further retry waits twice as long, with jitter. 0 retries at once.
	Backoff Duration `toml:"backoff"`
}

// Source is the [source] table.
type Source struct {
	// Type is the kind of job source: "spool" (the default). "postgres" is
	// planned and refused by this build.
	Type string `toml:"type"`
	// Spool is the [source.spool] table, used when Type is "spool".
	Spool Spool `toml:"spool"`
}

// Spool is the [source.spool] table.
type Spool struct {
	// Dir is the spool directory holding incoming/, running/, done/ and
	// failed/ (default "/var/spool/jobdaemon").
	Dir string `toml:"dir"`
	// MaxPayload is the largest job file accepted; larger ones are moved
	// to failed/ unread (default 64MiB; must be positive).
	MaxPayload Size `toml:"max_payload"`
	// RescanInterval is how often the spool is scanned for files that
	// inotify did not report (default 10s; must be positive).
	RescanInterval Duration `toml:"rescan_interval"`
}

// Control is the [control] table.
type Control struct {
	// Socket is the path of the control socket (default
	// "/run/jobdaemon/control.sock"); "" opens none. A Unix socket path
	// holds at most 107 bytes.
	Socket string `toml:"socket"`
	// Group, if set, is the group (a name or a numeric gid) that owns the
	// socket file and whose members may connect, besides root and the
	// daemon's own user. "" takes daemon.group, or daemon.user's primary
	// group, or else the daemon's own group.
	Group string `toml:"group"`

	gid int // Group resolved by Validate; -1 for none
}

// Log is the log table of config.toml.
type Log struct {
	// Level is the daemon's own verbosity: "trace", "debug", "info" (the
	// default), "warn" or "error". See ParseLevel.
	Level string `toml:"level"`
	// JobOutput is the level at which lines that jobs write are logged
	// (default "info"); same values as Level.
	JobOutput string `toml:"job_output"`
	// Format is "auto" (the default: the journal's native protocol under
	// systemd, text otherwise), "text" or "json".
	Format string `toml:"format"`
	// JobLog, if set, is a file that gets one line per finished job, like
	// GNU parallel's --joblog. "" (the default) writes none.
	JobLog string `toml:"joblog"`
	// Target is where the daemon logs: "auto" (the default: the journal
	// when stderr is connected to it, syslog for a classic daemon started
	// with "jobdaemon start", stderr otherwise), "stderr", "journal",
	// "syslog" or "file".
	Target string `toml:"target"`
	// File is the log file for target = "file"; it is reopened on SIGUSR1
	// (logrotate's postrotate). Relative to the config file's directory.
	File string `toml:"file"`
	// JobFacility is the syslog facility of job output lines, for the
	// journal and syslog targets (default "user"; the daemon's own lines
	// always use "daemon").
	JobFacility string `toml:"job_facility"`
	// JobIdentifier is the SYSLOG_IDENTIFIER (syslog tag) of job output
	// lines; "" (the default) takes the base name of job.command[0].
	JobIdentifier string `toml:"job_identifier"`
}

// Default returns the configuration that an empty config.toml gives,
// without a job command (which has no default).
func Default() *Config {
	return &Config{
		Daemon: Daemon{
			PIDFile:      "/run/jobdaemon/jobdaemon.pid",
			StopTimeout:  Duration(30 * time.Second),
			IdleInterval: Duration(2 * time.Second),
		},
		Pool: Pool{
			MaxChildren:    4,
			JobsPerChild:   1,
			KillGrace:      Duration(10 * time.Second),
			StopSignal:     Signal(syscall.SIGTERM),
			ForwardSignals: true,
		},
		Job: Job{
			MaxAttempts: 3,
			Backoff:     Duration(10 * time.Second),
		},
		Source: Source{
			Type: "spool",
			Spool: Spool{
				Dir:            "/var/spool/jobdaemon",
				MaxPayload:     64 << 20,
				RescanInterval: Duration(10 * time.Second),
			},
		},
		Control: Control{Socket: "/run/jobdaemon/control.sock"},
		Log:     Log{Level: "info", JobOutput: "info", Format: "auto", Target: "auto", JobFacility: "user"},
	}
}

// Load reads the configuration file at path and returns it with defaults
// applied, relative paths resolved, and validated (see Validate). A file
// needs only [job] command; everything else has a default.
//
// The error is an *Error, or several joined with errors.Join, each naming
// the file, the line when known and the key: unknown keys (with a
// suggestion), TOML syntax, values of the wrong type and values Validate
// refuses. Callers print it and exit with ExitConfig.
func Load(path string) (*Config, error) {
	c, err := Parse(path)
	if err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Parse is Load without Validate: it reads and decodes the file, refuses
// unknown keys and values of the wrong type, applies the defaults and makes
// relative paths absolute, but checks no ranges, users or files. An empty
// file gives Default with absolute paths. Client commands that need only
// control.socket or daemon.pid_file may use it.
func Parse(path string) (*Config, error) {
	data, err := readFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, &Error{File: path, Msg: "cannot read the configuration file: " + err.Error(), Err: err}
	}
	text := string(data)

	// Parse into a tree of undecoded values, learn the line of each key
	// and refuse unknown keys.
	var top map[string]toml.Primitive
	md, err := toml.Decode(text, &top)
	if err != nil {
		return nil, syntaxError(path, text, err)
	}
	p := &problems{file: path, idx: newLineIndex(&md, top)}
	unknownKeys(p, &md)

	// Then the known keys, one by one, into the defaults.
	c := Default()
	decodeTable(p, &md, top, schema, reflect.ValueOf(c).Elem(), nil)
	if err := p.err(); err != nil {
		return nil, err
	}
	c.file, c.idx = path, p.idx
	if err := c.resolvePaths(filepath.Dir(path)); err != nil {
		return nil, &Error{File: path, Msg: "cannot find the configuration file's directory: " + err.Error(), Err: err}
	}
	return c, nil
}

// maxFileSize is the largest configuration file read; it keeps a wrong
// path (a log file, /dev/zero) from being read whole.
const maxFileSize = 1 << 20

var errTooLarge = fmt.Errorf("larger than %v: is this the configuration file?", Size(maxFileSize))

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err == nil && len(data) > maxFileSize {
		err = errTooLarge
	}
	return data, err
}

// resolvePaths makes the relative paths in c absolute against dir.
func (c *Config) resolvePaths(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	abs(&c.Daemon.PIDFile)
	abs(&c.Source.Spool.Dir)
	abs(&c.Control.Socket)
	abs(&c.Log.JobLog)
	abs(&c.Log.File)
	abs(&c.Job.WorkingDir)
	if len(c.Job.Command) > 0 && strings.Contains(c.Job.Command[0], "/") {
		abs(&c.Job.Command[0])
	}
	return nil
}
