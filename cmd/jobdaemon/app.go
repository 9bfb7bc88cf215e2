package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jobdaemon/jobdaemon/internal/config"
	"github.com/jobdaemon/jobdaemon/pkg/jobs"
	"github.com/jobdaemon/jobdaemon/pkg/service"
)

// app is the binary's application: config.toml gives the service its
// settings, the jobs come from the configured source, and each runs the
// configured command: a process per job, or, in worker mode, a command
// worker per slot that runs many. The hooks run on the dispatcher
// goroutine, one at a time; Configure also runs in the client commands.
type app struct {
	cfg     *config.Config // in force, from the first LoadConfig on
	pending *config.Config // read by Configure, applied by the next LoadConfig
	src     source         // opened by the first LoadConfig
	env     []string       // the jobs' environment, without the JOB_* variables
	joblog  *jobLog        // nil without [log] joblog

	running map[string]*started // by job id, from Command to Finish
}

// started is what the app keeps of a job between Command and Finish.
type started struct {
	stdin io.Closer // the job's payload file, when it has one
	args  []string
}

func newApp() *app { return &app{running: make(map[string]*started)} }

// Configure implements service.Configurer: the settings are config.toml's
// [daemon], [pool], [control] and [log] tables. The daemon checks the
// whole file (Load); a client command needs only the socket and the PID
// file, and must work where the job's program or user do not exist.
func (a *app) Configure(ctx context.Context, s *service.Settings) error {
	load := config.Parse
	if s.Command == "run" {
		load = readConfig
	}
	cfg, err := load(s.ConfigFile)
	if err != nil {
		return err
	}
	file, command := s.ConfigFile, s.Command
	*s = cfg.Settings()
	s.ConfigFile, s.Command = file, command
	if s.Log.JobIdentifier == "" && len(cfg.Job.Command) > 0 {
		// The program's name, made a syslog identifier (Validate refuses
		// spaces and '=' there): a key the file does not set must not
		// fail it.
		s.Log.JobIdentifier = strings.Map(func(r rune) rune {
			if strings.ContainsRune(" \t\n=", r) {
				return '_'
			}
			return r
		}, filepath.Base(cfg.Job.Command[0]))
	}
	if command == "run" {
		if a.cfg == nil {
			// At start, before the privilege drop: a DSN file may be
			// root's alone. A reload keeps the source, and reads nothing.
			if err := readSecrets(cfg); err != nil {
				return err
			}
		}
		a.pending = cfg
	}
	return nil
}

// readConfig loads the config file, at start and on every reload.
// It also checks, on this host, the directories the daemon needs: a file
// that names a missing one is a configuration error, found before
// anything starts.
func readConfig(path string) (*config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	if err := cfg.Preflight(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// LoadConfig implements jobs.ConfigLoader. At start it opens the source,
// after the service dropped its privileges, so that what the source
// creates belongs to the daemon's user; on a reload it applies the parts
// of [job] that take effect per job, and names in a warning what needs a
// restart (the service does so for its own settings).
func (a *app) LoadConfig(ctx context.Context) error {
	next := a.pending
	if next == nil {
		return errors.New("no configuration read")
	}
	d := jobs.DaemonFrom(ctx)
	if a.cfg == nil {
		src, err := openSource(ctx, next, d.Logger())
		if err != nil {
			return err
		}
		if next.Log.JobLog != "" {
			if a.joblog, err = openJobLog(next.Log.JobLog); err != nil {
				src.Close()
				return fmt.Errorf("open the job log: %w", err)
			}
		}
		a.cfg, a.src = next, src
	} else {
		if keys := service.RestartKeys(ownTables(a.cfg), ownTables(next)); len(keys) > 0 {
			d.Logger().Warn("these changes need a restart and are ignored until then", "keys", strings.Join(keys, ", "))
		}
		service.CopyLive(&a.cfg.Job, &next.Job)
	}
	a.env = jobEnv(a.cfg.Job)
	return nil
}

// binaryTables are the tables of config.toml that are the binary's own,
// not the service's settings.
type binaryTables struct {
	Job    config.Job    `toml:"job"`
	Source config.Source `toml:"source"`
	Log    struct {
		JobLog string `toml:"joblog"`
	} `toml:"log"`
}

func ownTables(c *config.Config) binaryTables {
	t := binaryTables{Job: c.Job, Source: c.Source}
	t.Log.JobLog = c.Log.JobLog
	return t
}

// jobEnv returns the environment of every job, before the JOB_* variables:
// the inherited variables, then [job] env.
func jobEnv(job config.Job) []string {
	var env []string
	for _, name := range job.InheritEnv {
		if v, ok := os.LookupEnv(name); ok {
			env = append(env, name+"="+v)
		}
	}
	for k, v := range job.Env {
		env = append(env, k+"="+v)
	}
	return env
}

// NextJob implements jobs.Source. In worker mode, a job whose source gives
// it as a file (the spool) gets the file's content as its payload, for its
// job line; a file that cannot be read whole is filed as failed, and the
// next job taken.
func (a *app) NextJob(ctx context.Context, slot int) (*jobs.Job, error) {
	for {
		job, err := a.src.NextJob(ctx, slot)
		if job == nil || err != nil || a.cfg.Job.Mode != config.ModeWorker {
			return job, err
		}
		path := job.Meta[jobs.MetaPath]
		if path == "" || job.Payload != nil {
			return job, nil
		}
		if job.Payload, err = a.readPayload(job, path); err == nil {
			return job, nil
		}
		d := jobs.DaemonFrom(ctx)
		d.Logger().Warn("cannot read the job's file for its worker", "job_id", job.ID, "err", err)
		if _, err := a.src.Finish(ctx, job, jobs.Result{ExitCode: -1, Error: err.Error()}); err != nil {
			return nil, fmt.Errorf("file the unreadable job %q: %w", job.ID, err)
		}
	}
}

// readPayload reads a job's file, of at most max_payload bytes (0: no
// limit), opened as its source opens it (openJobFile).
func (a *app) readPayload(job *jobs.Job, path string) ([]byte, error) {
	limit := maxPayload(a.cfg)
	f, err := a.openJobFile(job, path)
	if err != nil {
		return nil, fmt.Errorf("read the job's file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read the job's file: %w", err)
	}
	if limit > 0 && fi.Size() > limit {
		return nil, fmt.Errorf("the job's file is %d bytes, more than max_payload (%d)", fi.Size(), limit)
	}
	// Read to the size it had, and no further: a file that grows now
	// would not be read whole.
	b := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, fmt.Errorf("read the job's file %s: %w", path, err)
	}
	if n, _ := f.Read(make([]byte, 1)); n > 0 {
		return nil, fmt.Errorf("the job's file %s grew while it was read", path)
	}
	return b, nil
}

// Wake implements jobs.Waker.
func (a *app) Wake() <-chan struct{} { return a.src.Wake() }

// Watching implements jobs.Watcher: the source's, if it is one (the
// spool, while inotify watches it); else false, and the daemon polls.
func (a *app) Watching() bool {
	w, ok := a.src.(jobs.Watcher)
	return ok && w.Watching()
}

// Depth implements jobs.Depther: the jobs waiting in the source. Status
// may ask before the source is open.
func (a *app) Depth() (int, error) {
	if a.src == nil {
		return 0, errors.New("the source is not open yet")
	}
	return a.src.Depth()
}

// OldestAge implements jobs.OldestAger: how long the oldest due job has
// waited in the source.
func (a *app) OldestAge() (time.Duration, error) {
	if a.src == nil {
		return 0, errors.New("the source is not open yet")
	}
	return a.src.OldestAge()
}

// Command implements jobs.Commander: the configured command, with the
// placeholders replaced as whole arguments, the job's payload as standard
// input (its file, for a source whose jobs are files), and nothing else of
// the daemon's environment.
func (a *app) Command(ctx context.Context, job *jobs.Job) (*jobs.Spec, error) {
	path := job.Meta[jobs.MetaPath]
	slot, attempt := strconv.Itoa(job.Slot), strconv.Itoa(job.Attempt)
	args := a.args(func(p string) string {
		switch p {
		case config.PlaceholderPath:
			return path
		case config.PlaceholderName:
			return job.Meta["name"]
		case config.PlaceholderID:
			return job.ID
		case config.PlaceholderSlot:
			return slot
		case config.PlaceholderAttempt:
			return attempt
		}
		return p
	})
	env := append(a.env[:len(a.env):len(a.env)], "JOB_ID="+job.ID, "JOB_SLOT="+slot, "JOB_ATTEMPT="+attempt)
	st := &started{args: args}
	var stdin io.Reader = bytes.NewReader(job.Payload)
	if path != "" {
		f, err := a.openJobFile(job, path)
		if err != nil {
			return nil, fmt.Errorf("open job file: %w", err)
		}
		stdin, st.stdin = f, f
		if a.cfg.Job.User == "" {
			// A job of its own user cannot open it: {path} is refused
			// then, and the file is its standard input.
			env = append(env, "JOB_PATH="+path)
		}
	}
	a.running[job.ID] = st
	return &jobs.Spec{Path: args[0], Args: args, Env: env, Dir: a.cfg.Job.WorkingDir, Stdin: stdin}, nil
}

// args returns the configured command with each argument that is a
// placeholder replaced by what value returns for it (config.Validate lets
// through only the placeholders of the mode).
func (a *app) args(value func(placeholder string) string) []string {
	args := make([]string, len(a.cfg.Job.Command))
	for i, arg := range a.cfg.Job.Command {
		if i > 0 && strings.HasPrefix(arg, "{") {
			arg = value(arg)
		}
		args[i] = arg
	}
	return args
}

// workerArgs returns the command of slot's worker.
func (a *app) workerArgs(slot int) []string {
	return a.args(func(p string) string {
		if p == config.PlaceholderSlot {
			return strconv.Itoa(slot)
		}
		return p
	})
}

// WorkerCommand implements jobs.WorkerCommander: in worker mode, the
// configured command, with {slot} replaced, and the jobs' environment (the
// daemon adds JOBDAEMON_WORKER and JOB_SLOT); in process mode, nil, and
// each job runs its own process (Command).
func (a *app) WorkerCommand(ctx context.Context, slot int) (*jobs.Spec, error) {
	if a.cfg.Job.Mode != config.ModeWorker {
		return nil, nil
	}
	args := a.workerArgs(slot)
	return &jobs.Spec{Path: args[0], Args: args, Env: a.env, Dir: a.cfg.Job.WorkingDir}, nil
}

// fileOpener is a source whose jobs are files that it opens for the
// daemon, safely (the spool: no link followed, no FIFO waited on, the
// very file it claimed).
type fileOpener interface {
	Open(job *jobs.Job) (*os.File, error)
}

// openJobFile opens the file of a job, for its standard input.
func (a *app) openJobFile(job *jobs.Job, path string) (*os.File, error) {
	if o, ok := a.src.(fileOpener); ok {
		return o.Open(job)
	}
	return os.Open(path)
}

// Finish implements jobs.Finisher: the source files the job.
func (a *app) Finish(ctx context.Context, job *jobs.Job, res jobs.Result) (jobs.Verdict, error) {
	var args []string
	if st := a.running[job.ID]; st != nil {
		delete(a.running, job.ID)
		if st.stdin != nil {
			st.stdin.Close()
		}
		args = st.args
	} else if a.cfg.Job.Mode == config.ModeWorker {
		args = append(a.workerArgs(job.Slot), job.ID) // which worker, which job
	}
	if a.joblog != nil && args != nil {
		if err := a.joblog.write(res, args); err != nil {
			return jobs.Unknown, err
		}
	}
	return a.src.Finish(ctx, job, res)
}

// Submit implements service.Submitter, for the control socket.
func (a *app) Submit(ctx context.Context, id string, r io.Reader) (string, error) {
	return a.src.Submit(ctx, id, r)
}

// MaxPayload bounds what the control socket accepts as a job. The server
// asks before the source is open.
func (a *app) MaxPayload() int64 { return maxPayload(a.pending) }

// Failed implements service.FailedCounter: jobs filed as failed,
// refused ones included.
func (a *app) Failed() int {
	if a.src == nil {
		return 0
	}
	return a.src.Failed()
}

// CountJobs implements service.JobCounter, for a source that counts its
// jobs by state.
func (a *app) CountJobs(ctx context.Context) (map[string]int64, error) {
	if jc, ok := a.src.(service.JobCounter); ok {
		return jc.CountJobs(ctx)
	}
	return nil, errors.New("the source does not count its jobs")
}

// Close closes the source and the job log, once the daemon has stopped.
func (a *app) Close() error {
	if a.joblog != nil {
		a.joblog.Close()
	}
	if a.src == nil {
		return nil
	}
	return a.src.Close()
}
