package config

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/BurntSushi/toml"

	"github.com/jobdaemon/jobdaemon/pkg/service"
)

// The placeholders of job.command. Each is replaced per job when it is a
// whole argument; nothing is replaced inside a longer argument.
const (
	// PlaceholderPath is the job file's absolute path (spool source).
	PlaceholderPath = "{path}"
	// PlaceholderName is the job file's base name (spool source).
	PlaceholderName = "{name}"
	// PlaceholderID is the job's ID.
	PlaceholderID = "{id}"
	// PlaceholderSlot is the number of the pool slot running the job.
	PlaceholderSlot = "{slot}"
	// PlaceholderAttempt is the attempt number, starting at 1.
	PlaceholderAttempt = "{attempt}"
)

var placeholders = []string{PlaceholderPath, PlaceholderName, PlaceholderID, PlaceholderSlot, PlaceholderAttempt}

// braces finds what looks like a placeholder: braces around no whitespace.
// "{print $1}" (awk) does not; "{}" and "{.}" (GNU parallel) do.
var braces = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`\{[^{}\s]*\}`) })

// reservedEnv are set by the daemon for each job, or each worker;
// job.env may not set them.
var reservedEnv = []string{"JOB_ID", "JOB_PATH", "JOB_SLOT", "JOB_ATTEMPT", "JOBDAEMON_WORKER"}

// Validate checks every value of c and returns all the problems found, each
// an *Error naming the key, its line when c came from Load or Parse, and
// the fix; several are joined with errors.Join. It looks up daemon.user and
// daemon.group, checks that job.working_dir is a directory and that the
// job's program is an executable file. A program name without a slash is
// looked up in PATH, and Validate replaces job.command[0] with the absolute
// path it found.
func (c *Config) Validate() error {
	v := &validator{problems{file: c.file, idx: c.idx}}
	if keys := service.NULKeys(c); len(keys) > 0 {
		// In every table; nothing else is worth checking in a file that
		// holds these.
		for _, key := range keys {
			v.fail(key, nil, "%s", service.NULMessage)
		}
		return v.err()
	}

	// The service's tables: the service checks them as it would for any
	// program; this adds the file's lines.
	st := c.Settings()
	for _, err := range unjoin(st.Validate()) {
		var se *service.SettingError
		if errors.As(err, &se) {
			v.add(&Error{Key: se.Key, Msg: se.Msg, Err: se.Err})
		} else {
			v.add(&Error{Msg: err.Error(), Err: err})
		}
	}
	v.path("log.joblog", c.Log.JobLog, true)

	v.job(&c.Job)
	v.mode(c)

	v.source(c)
	return v.err()
}

// unjoin returns the errors that errors.Join put together in err.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if err != nil {
		return []error{err}
	}
	return nil
}

func (v *validator) job(j *Job) {
	switch {
	case len(j.Command) == 0:
		v.fail("job.command", nil, "required: set the program to run for each job and its arguments, such as command = [\"/usr/local/bin/convert-one\", \"{path}\"]")
	case j.Command[0] == "":
		v.fail("job.command", nil, "the program (the first element) is empty")
	case braces().MatchString(j.Command[0]):
		v.fail("job.command", nil, "the program %q cannot be a placeholder: placeholders are only replaced in arguments", j.Command[0])
	default:
		if prog, err := findProgram(j.Command[0]); err != nil {
			v.fail("job.command", err, "%v", err)
		} else {
			j.Command[0] = prog
		}
	}
	for i, arg := range j.Command {
		if i == 0 {
			continue
		}
		for _, m := range braces().FindAllString(arg, -1) {
			if err := placeholderError(arg, m); err != "" {
				v.fail("job.command", nil, "argument %d %s", i, err)
				break
			}
		}
	}

	if j.WorkingDir != "" {
		v.path("job.working_dir", j.WorkingDir, false)
		if fi, err := os.Stat(j.WorkingDir); err != nil {
			v.fail("job.working_dir", err, "%v: create the directory or change job.working_dir", unwrapPath(err))
		} else if !fi.IsDir() {
			v.fail("job.working_dir", nil, "%q is not a directory", j.WorkingDir)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(j.Env)) {
		key := toml.Key{"job", "env", name}.String()
		if msg := envNameError(name); msg != "" {
			v.fail(key, nil, "%s", msg)
		}
		if slices.Contains(reservedEnv, name) {
			v.fail(key, nil, "%s is set by the daemon for each job and cannot be set here", name)
		}
	}
	for _, name := range j.InheritEnv {
		const key = "job.inherit_env"
		if msg := envNameError(name); msg != "" {
			v.fail(key, nil, "%s", msg)
		}
		if name == "NOTIFY_SOCKET" || strings.HasPrefix(name, "LISTEN_") || strings.HasPrefix(name, "WATCHDOG_") {
			v.fail(key, nil, "%s belongs to the daemon's service manager and is never passed to jobs", name)
		}
	}
	v.intRange("job.max_attempts", j.MaxAttempts, 1, 1_000_000)
	v.nonNegative("job.backoff", j.Backoff)
}

// mode checks what job.mode changes: the placeholders a worker's command
// may have, and how many jobs a child runs.
func (v *validator) mode(c *Config) {
	j := &c.Job
	switch j.Mode {
	case ModeProcess:
		if n := c.Pool.JobsPerChild; n > 1 {
			v.fail("pool.jobs_per_child", nil, "%d: a process runs one job in job.mode \"process\"; set it to 1, or set mode = \"worker\" in [job] to run many jobs in each worker, a command that reads them on its standard input (docs/WORKER-PROTOCOL.md)", n)
		}
		return
	case ModeWorker:
	default:
		msg := fmt.Sprintf("unknown mode %q: use %q (a process per job) or %q (a command worker per slot, docs/WORKER-PROTOCOL.md)", j.Mode, ModeProcess, ModeWorker)
		if s := suggest(j.Mode, []string{ModeProcess, ModeWorker}); s != "" {
			msg = fmt.Sprintf("unknown mode %q (did you mean %q?)", j.Mode, s)
		}
		v.fail("job.mode", nil, "%s", msg)
		return
	}
	for i, arg := range j.Command {
		if i > 0 && arg != PlaceholderSlot && slices.Contains(placeholders, arg) {
			v.fail("job.command", nil, "argument %d is %s, which names one job: in worker mode the command starts once per slot and runs many jobs, which it reads on its standard input with their id, path and attempt; only %s may be an argument (docs/WORKER-PROTOCOL.md)", i, arg, PlaceholderSlot)
		}
	}
	if s := c.Source.Spool; c.Source.Type == "spool" && s.MaxPayload > MaxWorkerPayload {
		v.fail("source.spool.max_payload", nil, "%v is too large for worker mode, where a job's file travels in its job line, in base64: use at most %v", s.MaxPayload, MaxWorkerPayload)
	}
}

// placeholderError explains why m, a braced word found in arg, is wrong,
// or returns "" when arg is exactly a placeholder.
func placeholderError(arg, m string) string {
	known := slices.Contains(placeholders, m)
	list := strings.Join(placeholders, ", ")
	switch {
	case known && arg == m:
		return ""
	case known:
		return fmt.Sprintf("%q has the placeholder %s inside a longer argument: placeholders must be whole arguments, as there is no shell and nothing is interpolated inside a string; pass %s as an argument of its own and let the program (or a wrapper script) build %q", arg, m, m, arg)
	case m == "{}" || m == "{.}" || m == "{/}" || m == "{//}" || m == "{/.}" || m == "{#}" || m == "{%}":
		return fmt.Sprintf("%q uses GNU parallel's %s: the placeholders here are %s, each a whole argument", arg, m, list)
	}
	if s := suggest(m, placeholders); s != "" {
		return fmt.Sprintf("%q has the unknown placeholder %s (did you mean %s?); placeholders must be whole arguments", arg, m, s)
	}
	return fmt.Sprintf("%q has the unknown placeholder %s: the placeholders are %s, each a whole argument", arg, m, list)
}

// findProgram returns the absolute path of the program prog names, which
// must be an executable file.
func findProgram(prog string) (string, error) {
	if !strings.Contains(prog, "/") {
		p, err := exec.LookPath(prog)
		if errors.Is(err, exec.ErrDot) {
			return "", fmt.Errorf("program %q was found as %q through a relative directory in PATH, which is not trusted: write its absolute path", prog, p)
		}
		if err != nil {
			return "", fmt.Errorf("program %q is not in PATH (%s): write its absolute path", prog, os.Getenv("PATH"))
		}
		if prog, err = filepath.Abs(p); err != nil {
			return "", fmt.Errorf("program %q: %w", p, err)
		}
	}
	fi, err := os.Stat(prog)
	switch {
	case err != nil:
		return "", fmt.Errorf("program %w", unwrapPath(err))
	case fi.IsDir():
		return "", fmt.Errorf("program %q is a directory", prog)
	case !fi.Mode().IsRegular():
		return "", fmt.Errorf("program %q is not a regular file", prog)
	case fi.Mode().Perm()&0o111 == 0:
		return "", fmt.Errorf("program %q is not executable (mode %v): chmod +x it", prog, fi.Mode().Perm())
	}
	return prog, nil
}

// unwrapPath returns an error that says "path": reason, without the
// operation an *os.PathError adds ("stat /x: no such file or directory").
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%q: %w", pe.Path, pe.Err)
	}
	return err
}

// envNameError says why name cannot be an environment variable's name, or
// returns "".
func envNameError(name string) string {
	switch {
	case name == "":
		return "an empty variable name"
	case strings.Contains(name, "="):
		return fmt.Sprintf("the variable name %q contains \"=\"", name)
	}
	return ""
}

// validator collects the problems Validate finds.
type validator struct{ problems }

// fail records a problem with key, a dotted key as toml.Key.String()
// writes it; the message gets the key prepended.
func (v *validator) fail(key string, err error, format string, args ...any) {
	v.add(&Error{Key: key, Msg: key + ": " + fmt.Sprintf(format, args...), Err: err})
}

func (v *validator) intRange(key string, n, lo, hi int) {
	if n < lo || n > hi {
		v.fail(key, nil, "%d is out of range: use %d to %d", n, lo, hi)
	}
}

func (v *validator) positive(key string, d Duration, example string) {
	if d <= 0 {
		v.fail(key, nil, "%v must be positive, such as %q", d, example)
	}
}

func (v *validator) nonNegative(key string, d Duration) {
	if d < 0 {
		v.fail(key, nil, "%v is negative: use 0 or more", d)
	}
}

// path checks that p, if set, is absolute; optional says "" is allowed.
func (v *validator) path(key, p string, optional bool) {
	switch {
	case p == "" && !optional:
		v.fail(key, nil, "required: set a path")
	case p != "" && !filepath.IsAbs(p):
		v.fail(key, nil, "%q is relative: use an absolute path (Load resolves relative paths against the configuration file's directory)", p)
	}
}

// Preflight checks, on this host, what the daemon would refuse at start
// beyond Validate: the directories of the PID file, the control socket,
// the log file and the state directory (see service.Settings.Preflight),
// of the job log, and a spool directory that cannot be created. Errors
// name the file, line and key, as Validate's do.
func (c *Config) Preflight() error {
	v := &validator{problems{file: c.file, idx: c.idx}}
	st := c.Settings()
	for _, err := range unjoin(st.Preflight()) {
		var se *service.SettingError
		if errors.As(err, &se) {
			v.add(&Error{Key: se.Key, Msg: se.Msg, Err: se.Err})
		} else {
			v.add(&Error{Msg: err.Error(), Err: err})
		}
	}
	if p := c.Log.JobLog; p != "" {
		if fi, err := os.Stat(filepath.Dir(p)); err != nil || !fi.IsDir() {
			v.fail("log.joblog", err, "the directory %s does not exist: create it, or choose another path", filepath.Dir(p))
		}
	}
	if c.Source.Type == "spool" {
		// The spool makes its directories, but not past a file.
		for dir := c.Source.Spool.Dir; ; dir = filepath.Dir(dir) {
			fi, err := os.Stat(dir)
			if err == nil {
				if !fi.IsDir() {
					v.fail("source.spool.dir", nil, "%s is not a directory: the spool cannot be made there", dir)
				}
				break
			}
			if dir == filepath.Dir(dir) {
				break
			}
		}
	}
	return v.err()
}
