package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/jobdaemon/jobdaemon/pkg/service"
)

// Config is the content of config.toml. Load returns it with the defaults
// filled in, relative paths made absolute and every value checked.
//
// The [daemon], [pool], [control] and [log] tables are the service's
// settings (package service), which any program built on it has; [job]
// and [source] are the binary's own: the command to run and where jobs
// come from.
type Config struct {
	// Daemon is the [daemon] table: the process itself.
	Daemon service.DaemonSettings `toml:"daemon"`
	// Pool is the [pool] table: how many jobs run at once and how they stop.
	Pool service.PoolSettings `toml:"pool"`
	// Job is the [job] table: the command run for each job.
	Job Job `toml:"job"`
	// Source is the [source] table: where jobs come from.
	Source Source `toml:"source"`
	// Control is the [control] table: the control socket.
	Control service.ControlSettings `toml:"control"`
	// Log is the log table: the daemon's own log and the job log.
	Log Log `toml:"log"`
	// Metrics is the [metrics] table: Prometheus over TCP.
	Metrics service.MetricsSettings `toml:"metrics"`

	file string     // path as given to Load, for errors
	idx  *lineIndex // finds the line of a key in file

	pgDSN string // the postgres DSN, once PostgresDSN has read it
}

// Settings returns the service's settings of c: its [daemon], [pool],
// [control] and [log] tables.
func (c *Config) Settings() service.Settings {
	return service.Settings{Daemon: c.Daemon, Pool: c.Pool, Job: c.Job.JobSettings, Control: c.Control, Log: c.Log.LogSettings, Metrics: c.Metrics}
}

// Log is the [log] table: the service's log settings, and the binary's job
// log.
type Log struct {
	service.LogSettings
	// JobLog, if set, is a file that gets one line per finished job, like
	// GNU parallel's --joblog. "" (the default) writes none.
	JobLog string `toml:"joblog"`
}

// Job is the [job] table: the service's settings of it (how a job's
// processes are held together and limited), and the command.
type Job struct {
	// Mode is how the command runs jobs: "process" (the default), a
	// process per job; or "worker", a command worker started once per
	// slot and kept, which reads one job per line on its standard input
	// and answers each on file descriptor 3 (docs/WORKER-PROTOCOL.md). It
	// takes effect at the next start.
	Mode string `toml:"mode"`
	// Command is the program and its arguments, run without a shell for
	// each job (or once per worker, in worker mode); required. Command[0] is a path, or a name looked up in PATH
	// when Load runs and replaced by the absolute path found. Arguments
	// that are exactly one of the placeholders that the source fills in
	// (Placeholders: {path}, {name}, {id}, {slot} and {attempt} for the
	// spool; {id}, {slot} and {attempt} for postgres) are replaced per
	// job, and another source's are refused; a placeholder inside a
	// longer argument ("{path}.png") is an error, since nothing is
	// interpolated. An argument with whitespace inside its braces (an awk
	// program, say) is not taken for a placeholder. In worker mode only
	// {slot} is: a worker runs many jobs, which it reads on its stdin.
	Command []string `toml:"command" reload:"live"`
	// WorkingDir is the directory jobs run in; "" (the default) is the
	// daemon's own working directory. It must exist.
	WorkingDir string `toml:"working_dir" reload:"live"`
	// Env is added to each job's environment, after InheritEnv. The daemon
	// also sets JOB_ID, JOB_PATH, JOB_SLOT and JOB_ATTEMPT (in worker mode
	// JOBDAEMON_WORKER and JOB_SLOT), which Env may not set.
	Env map[string]string `toml:"env" reload:"live"`
	// InheritEnv names variables of the daemon's environment passed on to
	// jobs. By default nothing of the daemon's environment is passed on.
	// systemd's NOTIFY_SOCKET, LISTEN_* and WATCHDOG_* never are.
	InheritEnv []string `toml:"inherit_env" reload:"live"`
	// MaxAttempts is how often a job is tried before it is marked failed,
	// 1 to 1000000 (default 3; 1 means no retries).
	MaxAttempts int `toml:"max_attempts"`
	// Backoff is the delay before the first retry (default 10s); each
	// further retry waits twice as long, with jitter. 0 retries at once.
	Backoff Duration `toml:"backoff"`

	// The service's keys of [job]: keep_leftovers and the limits.
	service.JobSettings
}

// Source is the [source] table.
type Source struct {
	// Type is the kind of job source: "spool" (the default), a directory
	// on this host, or "postgres", a queue table that daemons on several
	// hosts share. Each fills in its own placeholders of job.command
	// (Placeholders).
	Type string `toml:"type"`
	// Spool is the [source.spool] table, used when Type is "spool".
	Spool Spool `toml:"spool"`
	// Postgres is the [source.postgres] table, used when Type is
	// "postgres".
	Postgres Postgres `toml:"postgres"`
}

// Spool is the [source.spool] table.
type Spool struct {
	// Dir is the spool directory holding incoming/, running/, done/ and
	// failed/ (default "/var/spool/jobdaemon").
	Dir string `toml:"dir"`
	// MaxPayload is the largest job file accepted; larger ones are moved
	// to failed/ unread (default 64MiB; must be positive). In worker mode
	// the file travels in its job line, in base64: the default is then
	// 32MiB, and at most MaxWorkerPayload.
	MaxPayload Size `toml:"max_payload"`
	// RescanInterval is how often the spool is scanned for files that
	// inotify did not report (default 2m; must be positive).
	RescanInterval Duration `toml:"rescan_interval"`
	// KeepDone and KeepFailed are how long a job stays in done/ and in
	// failed/, beside its record, before it is removed; 0 keeps it for
	// ever. Defaults: 720h (30 days) for done/, 0 for failed/, whose jobs
	// someone should look at.
	KeepDone   Duration `toml:"keep_done"`
	KeepFailed Duration `toml:"keep_failed"`
}

// Default returns the configuration that an empty config.toml gives,
// without a job command (which has no default).
func Default() *Config {
	def := service.Defaults("jobdaemon")
	return &Config{
		Daemon:  def.Daemon,
		Pool:    def.Pool,
		Control: def.Control,
		Log:     Log{LogSettings: def.Log},
		Job: Job{
			Mode:        ModeProcess,
			MaxAttempts: 3,
			Backoff:     Duration(10 * time.Second),
		},
		Source: Source{
			Type: "spool",
			Spool: Spool{
				Dir:            "/var/spool/jobdaemon",
				MaxPayload:     64 << 20,
				RescanInterval: Duration(2 * time.Minute),
				KeepDone:       Duration(30 * 24 * time.Hour),
			},
			Postgres: defaultPostgres(),
		},
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
	c.modeDefaults()
	if err := c.resolvePaths(filepath.Dir(path)); err != nil {
		return nil, &Error{File: path, Msg: "cannot find the configuration file's directory: " + err.Error(), Err: err}
	}
	return c, nil
}

// The values of job.mode.
const (
	ModeProcess = "process"
	ModeWorker  = "worker"
)

// Worker mode's own defaults, for the keys the file does not set.
const (
	// DefaultWorkerJobs is pool.jobs_per_child in worker mode: a worker
	// is replaced after that many jobs, which bounds what a leak in the
	// job's code can cost, at the price of a worker start per that many
	// jobs.
	DefaultWorkerJobs = 1000
	// DefaultWorkerPayload is source.spool.max_payload in worker mode.
	DefaultWorkerPayload Size = 32 << 20
	// MaxWorkerPayload is the largest source.spool.max_payload in worker
	// mode: a job line, with its payload in base64 and room for its id
	// and path, must fit in the 64 MiB the pool carries (pool.MaxMessage).
	MaxWorkerPayload Size = 47 << 20
)

// modeDefaults sets worker mode's own defaults where the file is silent.
func (c *Config) modeDefaults() {
	if c.Job.Mode != ModeWorker {
		return
	}
	if !c.idx.has("pool.jobs_per_child") {
		c.Pool.JobsPerChild = DefaultWorkerJobs
	}
	if !c.idx.has("source.spool.max_payload") {
		c.Source.Spool.MaxPayload = DefaultWorkerPayload
	}
}

// maxFileSize is the largest configuration file read; it keeps a wrong
// path (a log file, /dev/zero) from being read whole.
const maxFileSize = 1 << 20

var errTooLarge = fmt.Errorf("larger than %v: is this the configuration file?", Size(maxFileSize))

func readFile(path string) ([]byte, error) {
	f, err := openRegular(path, true)
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
	abs(&c.Daemon.StateDir)
	abs(&c.Source.Spool.Dir)
	abs(&c.Source.Postgres.DSNFile)
	abs(&c.Control.Socket)
	abs(&c.Log.JobLog)
	abs(&c.Log.File)
	abs(&c.Job.WorkingDir)
	if len(c.Job.Command) > 0 && strings.Contains(c.Job.Command[0], "/") {
		abs(&c.Job.Command[0])
	}
	return nil
}
