package service

import (
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jobdaemon/jobdaemon/pkg/lifecycle"
)

// Settings are what the service needs to know to run the daemon: where
// its PID file and control socket are, whom it runs as, the pool, how it
// stops and how it logs. An application starts from Defaults (or
// Options.Settings) and may change them from its own configuration in the
// Configure hook, at start and on every reload.
//
// The tables and keys are those of jobdaemon's config.toml, which embeds
// these types: a setting is named the same way everywhere, in errors
// ("pool.max_children: ...") and in the warning about settings that need
// a restart. A field tagged reload:"live" takes effect on a reload; the
// others keep their value until the daemon restarts, and a reload that
// changes them says so in a warning (see RestartKeys).
type Settings struct {
	// ConfigFile is set by the service before it calls Configure: the
	// --config flag, or its default (Options.ConfigFile, or the
	// environment variable NAME_CONFIG).
	ConfigFile string `toml:"-"`
	// Command is set by the service before it calls Configure: the
	// subcommand being run. "run" is the daemon itself, which needs every
	// setting; the client commands ("status", "stop", "reload"...) need
	// only Control.Socket and Daemon.PIDFile, and may run on a host
	// where the daemon's user does not exist.
	Command string `toml:"-"`

	Daemon  DaemonSettings  `toml:"daemon"`
	Pool    PoolSettings    `toml:"pool"`
	Job     JobSettings     `toml:"job"`
	Control ControlSettings `toml:"control"`
	Log     LogSettings     `toml:"log"`
	Metrics MetricsSettings `toml:"metrics"`
}

// MetricsSettings are the [metrics] table.
type MetricsSettings struct {
	// Listen, if set, is a TCP address ("127.0.0.1:9464", ":9464") where
	// the daemon serves GET /metrics, and nothing else, to Prometheus,
	// without the control socket's rights. "" (the default) serves them
	// only on the control socket. Under systemd the unit must allow IP
	// sockets (a drop-in: see docs/INSTALL.md).
	Listen string `toml:"listen"`
}

// DaemonSettings are the [daemon] table: the process itself.
type DaemonSettings struct {
	// PIDFile is the PID file the daemon writes and locks for its whole
	// life, so that two daemons never run on one configuration; "" writes
	// none, which suits systemd. It must be absolute.
	PIDFile string `toml:"pid_file"`
	// User, if set, is the user (a name or a numeric uid) the daemon drops
	// to once the PID file and the control socket are open, when started
	// as root. "" stays as started.
	User string `toml:"user"`
	// Group, if set, is the group to drop to; "" with User set takes the
	// user's primary group.
	Group string `toml:"group"`
	// StopTimeout is how long a graceful stop waits for running jobs
	// before it kills them with SIGKILL.
	StopTimeout time.Duration `toml:"stop_timeout" reload:"live"`
	// IdleInterval is the longest the daemon sleeps when no job is ready.
	IdleInterval time.Duration `toml:"idle_interval" reload:"live"`
	// StateDir is where the process groups of running jobs are recorded,
	// so that a daemon started after a crash kills what the previous
	// one's jobs left before it runs any job again. "" puts it beside the
	// PID file (PIDFILE without its extension, plus ".state"), or keeps no
	// state when there is no PID file.
	StateDir string `toml:"state_dir"`
	// Cgroup names the cgroup that a daemon started as root without
	// systemd hands to User before it drops its privileges, as systemd's
	// Delegate=yes does, so that its jobs still get cgroups; "" derives a
	// name unique to the PID file.
	Cgroup string `toml:"cgroup"`
}

// PoolSettings are the [pool] table: how many jobs run at once and how
// they stop.
type PoolSettings struct {
	// MaxChildren is how many jobs run at once, 1 to MaxChildrenLimit. A
	// reload applies it only when the configured value changed, so that a
	// size set at run time (scale, TTIN, TTOU) survives reloads.
	MaxChildren int `toml:"max_children" reload:"live"`
	// JobsPerChild is how many jobs a worker runs before it is replaced
	// (jobs.Options.JobsPerChild), 0 to 1000000: for a Go program, above 1
	// makes each child a worker, and 0 or 1 is a child per job; for
	// command workers, 0 means no limit.
	JobsPerChild int `toml:"jobs_per_child"`
	// WorkerMaxAge, if positive, replaces a worker older than this after
	// its current job; 0 never does. Workers started from then on take a
	// new value.
	WorkerMaxAge time.Duration `toml:"worker_max_age" reload:"live"`
	// WorkerMaxRSS, if positive, replaces a worker whose resident set has
	// passed this many bytes after its current job; 0 never does.
	WorkerMaxRSS Bytes `toml:"worker_max_rss" reload:"live"`
	// JobTimeout, if positive, stops a job that runs longer: StopSignal to
	// its process group, then SIGKILL after KillGrace. 0 means no limit.
	JobTimeout time.Duration `toml:"job_timeout" reload:"live"`
	// KillGrace is the time from StopSignal to SIGKILL.
	KillGrace time.Duration `toml:"kill_grace" reload:"live"`
	// StopSignal asks a job to stop, on a timeout and on a graceful stop.
	StopSignal syscall.Signal `toml:"stop_signal" reload:"live"`
	// ForwardSignals, if true, sends StopSignal to running jobs on a
	// graceful stop; if false they run on until StopTimeout.
	ForwardSignals bool `toml:"forward_signals" reload:"live"`
	// Cgroups is "auto" (a cgroup per job where cgroup v2 can be written:
	// as root, or under systemd with Delegate=yes; process groups
	// elsewhere, and the daemon says why), "off" (process groups) or
	// "require" (refuse to start without cgroups).
	Cgroups string `toml:"cgroups"`
	// CgroupPerJob makes a new cgroup for each job instead of one per
	// slot that the slot's jobs reuse.
	CgroupPerJob bool `toml:"cgroup_per_job"`
}

// JobSettings are what the service itself reads of the [job] table: whom
// jobs run as, and how a job's processes are held together and limited.
type JobSettings struct {
	// User, if set, is the user (a name or a numeric uid) every job runs
	// as: a user of the jobs' own, distinct from Daemon.User, so that a
	// job cannot reach the control socket, the daemon's log, the spool or
	// the daemon's processes, nor use up the daemon's process limit. The
	// daemon needs the right to start processes as another user: root,
	// or CAP_SETUID, CAP_SETGID and CAP_KILL (docs/INSTALL.md). "" runs
	// jobs as the daemon's own user, which status warns about.
	User string `toml:"user"`
	// Group, if set, is the jobs' group; "" with User set takes the
	// user's primary group.
	Group string `toml:"group"`
	// KeepLeftovers lets what a job leaves behind when its command exits
	// run on; by default it is killed. A timeout, a stop and the next
	// start after a crash kill it anyway.
	KeepLeftovers bool `toml:"keep_leftovers"`
	// MemoryMax, PidsMax, CPUWeight (1 to 10000) and CPUMax (in CPUs, such
	// as 0.5) limit each job's cgroup; 0 sets none. A limit needs per-job
	// cgroups and the cgroup v2 controller for it: without them the
	// daemon refuses to start.
	MemoryMax Bytes   `toml:"memory_max"`
	PidsMax   int64   `toml:"pids_max"`
	CPUWeight int     `toml:"cpu_weight"`
	CPUMax    float64 `toml:"cpu_max"`
}

// Bytes is a number of bytes. In TOML it is written with a binary unit,
// "512MiB" (see config.toml).
type Bytes int64

// ControlSettings are the [control] table: the control socket.
type ControlSettings struct {
	// Socket is the path of the control socket; "" opens none (the client
	// commands then cannot reach the daemon). At most 107 bytes.
	Socket string `toml:"socket"`
	// Group, if set, owns the socket (mode 0660), and its members may use
	// it besides root and the daemon's own user. "" takes Daemon.Group,
	// or Daemon.User's primary group.
	Group string `toml:"group"`
}

// LogSettings are the [log] table: the daemon's own log and the jobs'
// output.
type LogSettings struct {
	// Level is the daemon's own verbosity: "trace", "debug", "info",
	// "warn" or "error".
	Level string `toml:"level" reload:"live"`
	// JobOutput is the level given to the lines jobs write.
	JobOutput string `toml:"job_output" reload:"live"`
	// Format is "auto" (text on a terminal, JSON elsewhere), "text" or
	// "json", for the stderr and file targets.
	Format string `toml:"format"`
	// Target is where the daemon logs: "auto" (the journal when stderr is
	// connected to it, syslog for a classic daemon, stderr otherwise),
	// "stderr", "journal", "syslog" or "file".
	Target string `toml:"target"`
	// File is the log file of Target "file"; SIGUSR1 reopens it.
	File string `toml:"file"`
	// JobFacility is the syslog facility of the jobs' lines (the daemon's
	// own lines always have "daemon").
	JobFacility string `toml:"job_facility"`
	// JobIdentifier is the syslog identifier of the jobs' lines; "" takes
	// the program's name.
	JobIdentifier string `toml:"job_identifier"`
}

// MaxChildrenLimit is the largest Pool.MaxChildren.
const MaxChildrenLimit = 10000

// Defaults returns the settings of a program called name: its PID file
// and control socket in /run/NAME, 4 children, a graceful stop of 30 s,
// logging at info where the service manager looks.
func Defaults(name string) Settings {
	return Settings{
		Daemon: DaemonSettings{
			PIDFile:      "/run/" + name + "/" + name + ".pid",
			StopTimeout:  30 * time.Second,
			IdleInterval: 2 * time.Second,
		},
		Pool: PoolSettings{
			MaxChildren:    4,
			JobsPerChild:   1,
			KillGrace:      10 * time.Second,
			StopSignal:     syscall.SIGTERM,
			ForwardSignals: true,
			Cgroups:        "auto",
		},
		Control: ControlSettings{Socket: "/run/" + name + "/control.sock"},
		Log:     LogSettings{Level: "info", JobOutput: "info", Format: "auto", Target: "auto", JobFacility: "user"},
	}
}

// SettingError is one setting that Validate refuses.
type SettingError struct {
	// Key is the dotted key of the setting, as in config.toml
	// ("pool.max_children").
	Key string
	// Msg says what is wrong and how to fix it; it starts with Key.
	Msg string
	// Err is the underlying error, if any.
	Err error
}

func (e *SettingError) Error() string { return e.Msg }

// Unwrap returns the underlying error, or nil.
func (e *SettingError) Unwrap() error { return e.Err }

// Validate checks every setting and returns all the problems found, each a
// *SettingError, joined with errors.Join; nil when the settings are
// usable. It looks up Daemon.User, Daemon.Group and Control.Group on this
// host.
func (s *Settings) Validate() error {
	var v checker
	if keys := NULKeys(s); len(keys) > 0 {
		// Nothing else is worth checking in a file that holds these.
		for _, key := range keys {
			v.fail(key, nil, "%s", NULMessage)
		}
		return errors.Join(v.errs...)
	}
	d := &s.Daemon
	v.path("daemon.pid_file", d.PIDFile)
	cred, err := d.credential()
	if err != nil {
		v.add(err)
	}
	v.positive("daemon.stop_timeout", d.StopTimeout, "30s")
	v.positive("daemon.idle_interval", d.IdleInterval, "2s")

	v.path("daemon.state_dir", d.StateDir)
	if strings.ContainsAny(d.Cgroup, "/\x00") || d.Cgroup == "." || d.Cgroup == ".." {
		v.fail("daemon.cgroup", nil, "%q: a cgroup name has no '/'", d.Cgroup)
	}

	p := &s.Pool
	v.intRange("pool.max_children", p.MaxChildren, 1, MaxChildrenLimit)
	switch p.Cgroups {
	case "auto", "off", "require":
	default:
		v.fail("pool.cgroups", nil, "unknown mode %q: use \"auto\", \"off\" or \"require\"", p.Cgroups)
	}
	j := &s.Job
	if _, err := s.JobCredential(); err != nil {
		v.add(err)
	}
	if j.MemoryMax < 0 || j.PidsMax < 0 || j.CPUMax < 0 {
		v.fail("job", nil, "job limits cannot be negative: use 0 for none")
	}
	if j.CPUWeight != 0 {
		v.intRange("job.cpu_weight", j.CPUWeight, 1, 10000)
	}
	if p.Cgroups == "off" && (j.MemoryMax > 0 || j.PidsMax > 0 || j.CPUWeight > 0 || j.CPUMax > 0) {
		v.fail("pool.cgroups", nil, "job limits need per-job cgroups, and cgroups = \"off\": remove the limits or set cgroups = \"auto\"")
	}
	v.intRange("pool.jobs_per_child", p.JobsPerChild, 0, 1_000_000)
	if p.WorkerMaxAge < 0 {
		v.fail("pool.worker_max_age", nil, "%v is negative: use 0 (no limit) or more", p.WorkerMaxAge)
	}
	if p.WorkerMaxRSS < 0 {
		v.fail("pool.worker_max_rss", nil, "%d is negative: use 0 (no limit) or more", p.WorkerMaxRSS)
	}
	if p.JobTimeout < 0 {
		v.fail("pool.job_timeout", nil, "%v is negative: use 0 (no limit) or more", p.JobTimeout)
	}
	v.positive("pool.kill_grace", p.KillGrace, "10s")
	if p.StopSignal < 1 || p.StopSignal > lifecycle.MaxSignal {
		v.fail("pool.stop_signal", nil, "%d is not a signal: use a name such as \"SIGTERM\"", int(p.StopSignal))
	}

	c := &s.Control
	v.path("control.socket", c.Socket)
	if n := len(c.Socket); n > maxSocketPath {
		v.fail("control.socket", nil, "%q is %d bytes long, but a Unix socket path holds at most %d: choose a shorter path", c.Socket, n, maxSocketPath)
	}
	if _, err := s.controlGroup(cred); err != nil {
		v.add(err)
	}

	if a := s.Metrics.Listen; a != "" {
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			v.fail("metrics.listen", err, "%q is not a TCP address: write host:port, such as \"127.0.0.1:9464\" or \":9464\"", a)
		}
	}

	l := &s.Log
	for _, lv := range []struct{ key, val string }{{"log.level", l.Level}, {"log.job_output", l.JobOutput}} {
		if _, err := ParseLevel(lv.val); err != nil {
			v.fail(lv.key, err, "%v", err)
		}
	}
	switch l.Format {
	case "auto", "text", "json":
	default:
		v.fail("log.format", nil, "unknown format %q: use \"auto\", \"text\" or \"json\"", l.Format)
	}
	switch l.Target {
	case "auto", "stderr", "journal", "syslog":
		if l.File != "" {
			v.fail("log.file", nil, "log.file is set, but log.target is %q: set target = \"file\" to log there, or remove log.file", l.Target)
		}
	case "file":
		if l.File == "" {
			v.fail("log.file", nil, "log.target is \"file\" and needs log.file, such as \"/var/log/NAME.log\"")
		}
		v.path("log.file", l.File)
	default:
		v.fail("log.target", nil, "unknown target %q: use \"auto\", \"stderr\", \"journal\", \"syslog\" or \"file\"", l.Target)
	}
	if _, ok := Facilities[l.JobFacility]; !ok {
		v.fail("log.job_facility", nil, "unknown syslog facility %q: use one of %s", l.JobFacility, strings.Join(slices.Sorted(maps.Keys(Facilities)), ", "))
	}
	if strings.ContainsAny(l.JobIdentifier, " \t\n=") {
		v.fail("log.job_identifier", nil, "%q: a syslog identifier has no spaces and no '='", l.JobIdentifier)
	}
	return errors.Join(v.errs...)
}

// maxSocketPath is the longest Unix socket path: sun_path holds 108 bytes
// with the terminating NUL.
const maxSocketPath = 107

// checker collects the problems Validate finds.
type checker struct{ errs []error }

func (v *checker) add(err error) { v.errs = append(v.errs, err) }

func (v *checker) fail(key string, err error, format string, args ...any) {
	v.add(&SettingError{Key: key, Msg: key + ": " + fmt.Sprintf(format, args...), Err: err})
}

func (v *checker) intRange(key string, n, lo, hi int) {
	if n < lo || n > hi {
		v.fail(key, nil, "%d is out of range: use %d to %d", n, lo, hi)
	}
}

func (v *checker) positive(key string, d time.Duration, example string) {
	if d <= 0 {
		v.fail(key, nil, "%v must be positive, such as %q", d, example)
	}
}

// path checks that p, if set, is an absolute path (NULKeys has refused
// NUL bytes).
func (v *checker) path(key, p string) {
	if p != "" && !filepath.IsAbs(p) {
		v.fail(key, nil, "%q is relative: use an absolute path", p)
	}
}

// Credential returns the user, group and supplementary groups that
// Daemon.User and Daemon.Group name, looked up on this host; nil when no
// user is set. The error is a *SettingError.
func (s *Settings) Credential() (*syscall.Credential, error) { return s.Daemon.credential() }

func (d *DaemonSettings) credential() (*syscall.Credential, error) {
	return lookupCredential("daemon", d.User, d.Group)
}

// JobCredential returns the user, group and supplementary groups that
// Job.User and Job.Group name, looked up on this host: whom jobs run as;
// nil when Job.User is not set (jobs run as the daemon's user). The
// error is a *SettingError.
func (s *Settings) JobCredential() (*syscall.Credential, error) {
	return lookupCredential("job", s.Job.User, s.Job.Group)
}

// lookupCredential resolves the keys user and group of table. The
// supplementary groups are those of the group database (initgroups(3)),
// the primary group among them.
func lookupCredential(table, userName, groupName string) (*syscall.Credential, error) {
	userKey, groupKey := table+".user", table+".group"
	fail := func(key string, err error, format string, args ...any) (*syscall.Credential, error) {
		return nil, &SettingError{Key: key, Msg: key + ": " + fmt.Sprintf(format, args...), Err: err}
	}
	if userName == "" {
		if groupName != "" {
			return fail(groupKey, nil, "%s %q is set without %s: set %s too (a group alone would be ignored)", groupKey, groupName, userKey, userKey)
		}
		return nil, nil
	}
	u, err := lookupUser(userName)
	if err != nil {
		unset := "stays as started"
		if table == "job" {
			unset = "runs jobs as the daemon's user"
		}
		return fail(userKey, err, "no user %q on this host: create it, or set %s to an existing user (\"\" %s)", userName, userKey, unset)
	}
	gid := u.Gid
	if groupName != "" {
		g, err := lookupGroup(groupName)
		if err != nil {
			return fail(groupKey, err, "no group %q on this host: create it, or set %s to an existing group (\"\" takes the user's primary group)", groupName, groupKey)
		}
		gid = g.Gid
	}
	groups, err := u.GroupIds()
	if err != nil {
		return fail(userKey, err, "cannot list the groups of user %q: %v", userName, err)
	}
	ids := append([]string{u.Uid, gid}, groups...)
	nums := make([]uint32, len(ids))
	for i, id := range ids {
		n, err := strconv.ParseUint(id, 10, 32)
		if err != nil { // never on Linux; and 0 would mean root
			return fail(userKey, err, "user %q has an id %q that is not a number", userName, id)
		}
		nums[i] = uint32(n)
	}
	return &syscall.Credential{Uid: nums[0], Gid: nums[1], Groups: nums[2:]}, nil
}

// ControlGid returns the group of the control socket: Control.Group, or
// the daemon's group (Daemon.Group, or Daemon.User's primary group); -1
// when none is set, and the socket keeps the daemon's own group. The error
// is a *SettingError.
func (s *Settings) ControlGid() (int, error) {
	var cred *syscall.Credential
	if s.Control.Group == "" {
		cred, _ = s.Daemon.credential() // an error is daemon.user's
	}
	return s.controlGroup(cred)
}

// controlGroup is ControlGid with the daemon's credential resolved
// already (nil: none, or it could not be).
func (s *Settings) controlGroup(cred *syscall.Credential) (int, error) {
	name := s.Control.Group
	if name == "" {
		if cred == nil {
			return -1, nil // reported for daemon.user, if at all
		}
		return int(cred.Gid), nil
	}
	g, err := lookupGroup(name)
	if err != nil {
		return -1, &SettingError{Key: "control.group", Err: err,
			Msg: fmt.Sprintf("control.group: no group %q on this host: create it, or set control.group to an existing group", name)}
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return -1, &SettingError{Key: "control.group", Err: err,
			Msg: fmt.Sprintf("control.group: group %q has the non-numeric id %q", name, g.Gid)}
	}
	return gid, nil
}

// lookupUser finds a user by name, or by uid when name is a number.
func lookupUser(name string) (*user.User, error) {
	u, err := user.Lookup(name)
	if err != nil && isNumber(name) {
		return user.LookupId(name)
	}
	return u, err
}

// lookupGroup finds a group by name, or by gid when name is a number.
func lookupGroup(name string) (*user.Group, error) {
	g, err := user.LookupGroup(name)
	if err != nil && isNumber(name) {
		return user.LookupGroupId(name)
	}
	return g, err
}

func isNumber(s string) bool { return s != "" && strings.Trim(s, "0123456789") == "" }

// Facilities are the syslog facilities by name, with their numbers.
var Facilities = map[string]int{
	"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
	"uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
	"local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

// LevelTrace is the level of "trace": below slog.LevelDebug, for the
// daemon's internal steps.
const LevelTrace = slog.LevelDebug - 4

var levels = []struct {
	name  string
	level slog.Level
}{
	{"trace", LevelTrace},
	{"debug", slog.LevelDebug},
	{"info", slog.LevelInfo},
	{"warn", slog.LevelWarn},
	{"error", slog.LevelError},
}

var errLevel = errors.New(`use "trace", "debug", "info", "warn" or "error"`)

// ParseLevel returns the slog level of a Log.Level or Log.JobOutput value:
// "trace" (LevelTrace), "debug", "info", "warn" or "error", in any case.
func ParseLevel(s string) (slog.Level, error) {
	for _, l := range levels {
		if strings.EqualFold(s, l.name) {
			return l.level, nil
		}
	}
	return 0, fmt.Errorf("unknown level %q: %w", s, errLevel)
}

// LiveKeys returns the dotted keys of the settings that a reload applies:
// the fields tagged reload:"live", anywhere in v, a struct of tables such
// as Settings.
func LiveKeys(v any) []string {
	var keys []string
	rv := reflect.New(reflect.TypeOf(v)).Elem()
	eachSetting(rv, rv, "", func(key string, live bool, _, _ reflect.Value) {
		if live {
			keys = append(keys, key)
		}
	})
	return keys
}

// RestartKeys returns the dotted keys of the settings that differ between
// old and next and take effect only at the next start: the fields of
// Settings not tagged reload:"live". It is how the warning of a reload is
// made, and the declaration it reads, the reload tag, is the only one.
func RestartKeys(old, next any) []string {
	var keys []string
	eachSetting(reflect.ValueOf(old), reflect.ValueOf(next), "", func(key string, live bool, a, b reflect.Value) {
		if !live && !reflect.DeepEqual(a.Interface(), b.Interface()) {
			keys = append(keys, key)
		}
	})
	return keys
}

// CopyLive copies the fields of src tagged reload:"live" into dst, two
// pointers to the same struct type: what a reload applies.
func CopyLive(dst, src any) {
	eachSetting(reflect.ValueOf(dst), reflect.ValueOf(src), "", func(_ string, live bool, d, s reflect.Value) {
		if live {
			d.Set(s)
		}
	})
}

// isTable reports whether f is a table of settings rather than a value:
// a struct with a toml name, or an embedded one.
func isTable(f reflect.StructField) bool {
	if f.Type.Kind() != reflect.Struct || f.Type == reflect.TypeFor[time.Time]() {
		return false
	}
	return f.Anonymous || tomlName(f) != ""
}

func tomlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	if name == "-" {
		return ""
	}
	return name
}

// eachSetting calls fn for every setting of a and b, two values (or
// pointers) of one struct type of tables: with its dotted key, whether it
// is live, and its field in each.
func eachSetting(a, b reflect.Value, prefix string, fn func(key string, live bool, fa, fb reflect.Value)) {
	for a.Kind() == reflect.Pointer {
		a, b = a.Elem(), b.Elem()
	}
	for i := range a.NumField() {
		f := a.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		key := prefix
		if !f.Anonymous {
			name := tomlName(f)
			if name == "" {
				continue
			}
			key = join(prefix, name)
		}
		if isTable(f) {
			eachSetting(a.Field(i), b.Field(i), key, fn)
			continue
		}
		fn(key, f.Tag.Get("reload") == "live", a.Field(i), b.Field(i))
	}
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// StatePath returns the state directory: Daemon.StateDir, or the one
// beside the PID file; "" for none.
func (s *Settings) StatePath() string {
	switch {
	case s.Daemon.StateDir != "":
		return s.Daemon.StateDir
	case s.Daemon.PIDFile == "":
		return ""
	}
	return strings.TrimSuffix(s.Daemon.PIDFile, filepath.Ext(s.Daemon.PIDFile)) + ".state"
}

// CgroupName returns the cgroup to delegate as root without systemd:
// Daemon.Cgroup, or the program's name and a hash of the PID file's path,
// so that two daemons on one host never share it.
func (s *Settings) CgroupName(name string) string {
	if s.Daemon.Cgroup != "" {
		return s.Daemon.Cgroup
	}
	h := fnv.New32a()
	h.Write([]byte(s.Daemon.PIDFile))
	return fmt.Sprintf("%s-%08x", name, h.Sum32())
}

// String writes b with the largest binary unit that divides it exactly:
// "512MiB", "1536B".
func (b Bytes) String() string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	n, i := int64(b), 0
	for n != 0 && n%1024 == 0 && i < len(units)-1 {
		n /= 1024
		i++
	}
	return strconv.FormatInt(n, 10) + units[i]
}

// MarshalText writes b as String does.
func (b Bytes) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

// Preflight checks what Validate does not and the daemon would refuse at
// start, on this host: that the directories of the PID file, the control
// socket, the log file and the state directory exist. A directory right
// under /run is not required: systemd's RuntimeDirectory= and tmpfiles.d
// make those at start and at boot. The errors are *SettingError, joined.
func (s *Settings) Preflight() error {
	var v checker
	for _, p := range []struct{ key, path string }{
		{"daemon.pid_file", s.Daemon.PIDFile},
		{"control.socket", s.Control.Socket},
		{"log.file", s.Log.File},
		{"daemon.state_dir", s.StatePath()},
	} {
		if p.path == "" || !filepath.IsAbs(p.path) {
			continue
		}
		dir := filepath.Dir(p.path)
		if filepath.Dir(dir) == "/run" {
			continue
		}
		fi, err := os.Stat(dir)
		switch {
		case err != nil:
			v.fail(p.key, err, "the directory %s does not exist: create it, or choose another path", dir)
		case !fi.IsDir():
			v.fail(p.key, nil, "%s is not a directory", dir)
		}
	}
	return errors.Join(v.errs...)
}
