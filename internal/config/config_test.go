package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/jobdaemon/jobdaemon/pkg/pool"
	"github.com/jobdaemon/jobdaemon/pkg/service"
)

// writeFile writes text to dir/name with mode and returns its path.
func writeFile(t *testing.T, dir, name, text string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(text), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// tool writes an executable script into dir and returns its path.
func tool(t *testing.T, dir string) string {
	t.Helper()
	return writeFile(t, dir, "bin/tool", "#!/bin/sh\nexit 0\n", 0o755)
}

// withCommand is a [job] table that Validate accepts, running tool.
func withCommand(tool string) string {
	return fmt.Sprintf("[job]\ncommand = [%q, \"{path}\"]\n", tool)
}

// errorList splits err into its *Errors.
func errorList(t *testing.T, err error) []*Error {
	t.Helper()
	if err == nil {
		return nil
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	var out []*Error
	for _, e := range errs {
		ce, ok := e.(*Error)
		if !ok {
			t.Fatalf("error %T is not an *Error: %v", e, e)
		}
		out = append(out, ce)
	}
	return out
}

func TestEmptyFileGetsDefaults(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "config.toml", "", 0o644)
	c, err := Parse(path)
	if err != nil {
		t.Fatal(err)
	}
	c.file, c.idx = "", nil
	if want := Default(); !reflect.DeepEqual(c, want) {
		t.Errorf("Parse(empty) =\n%+v\nwant\n%+v", c, want)
	}

	// Load wants a command, and says so without a line.
	_, err = Load(path)
	errs := errorList(t, err)
	if len(errs) != 1 || errs[0].Key != "job.command" || errs[0].Line != 0 || errs[0].File != path {
		t.Fatalf("Load(empty) = %v, want one job.command error", err)
	}
	if want := path + ": job.command: required"; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Load(empty) = %q, want prefix %q", err, want)
	}

	// A minimal file: just the command.
	prog := tool(t, dir)
	path = writeFile(t, dir, "minimal.toml", withCommand(prog), 0o644)
	c, err = Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Job.Command = []string{prog, "{path}"}
	c.file, c.idx = "", nil
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Load(minimal) =\n%+v\nwant\n%+v", c, want)
	}
}

func TestFullExample(t *testing.T) {
	dir := t.TempDir()
	prog := tool(t, dir)
	path := writeFile(t, dir, "config.toml", `
[daemon]
pid_file = "/run/jd/jd.pid"
user = "root"
group = "0"
stop_timeout = "1m"
idle_interval = "500ms"

[pool]
max_children = 8
jobs_per_child = 100
worker_max_age = "1h"
worker_max_rss = "256MiB"
job_timeout = "1h30m"
kill_grace = "5s"
stop_signal = "INT"
forward_signals = false

[job]
mode = "worker"
command = ["`+prog+`", "--slot", "{slot}", "awk '{print $1}'"]
working_dir = "/tmp"
env = { LANG = "C.UTF-8", "DOTTED.NAME" = "x" }
inherit_env = ["HOME", "TZ"]
max_attempts = 5
backoff = "0"

[source]
type = "spool"
[source.spool]
dir = "/srv/spool"
max_payload = "10KB"
rescan_interval = "1m"
[source.postgres]
dsn = "host=db.example dbname=jobs"
listen_dsn = "host=pg.example dbname=jobs"
listen = true
schema = "jd"
queue = "mail"
lease_ttl = "20s"
poll_interval = "250ms"
retention = "0"
max_payload = "1MiB"

[control]
socket = "/run/jd/control.sock"

[log]
level = "trace"
job_output = "debug"
format = "json"
joblog = "/var/log/jd/jobs.log"
target = "file"
file = "/var/log/jd/daemon.log"
job_facility = "local3"
job_identifier = "tool"
`, 0o644)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Daemon: service.DaemonSettings{PIDFile: "/run/jd/jd.pid", User: "root", Group: "0",
			StopTimeout: time.Minute, IdleInterval: 500 * time.Millisecond},
		Pool: service.PoolSettings{MaxChildren: 8, JobsPerChild: 100, WorkerMaxAge: time.Hour, WorkerMaxRSS: 256 << 20,
			JobTimeout: 90 * time.Minute, KillGrace: 5 * time.Second, StopSignal: syscall.SIGINT, ForwardSignals: false, Cgroups: "auto"},
		Job: Job{Mode: "worker", Command: []string{prog, "--slot", "{slot}", "awk '{print $1}'"}, WorkingDir: "/tmp",
			Env: map[string]string{"LANG": "C.UTF-8", "DOTTED.NAME": "x"}, InheritEnv: []string{"HOME", "TZ"},
			MaxAttempts: 5, Backoff: 0},
		Source: Source{Type: "spool", Spool: Spool{Dir: "/srv/spool", MaxPayload: 10 << 10, RescanInterval: Duration(time.Minute), KeepDone: Duration(30 * 24 * time.Hour)},
			Postgres: Postgres{DSN: "host=db.example dbname=jobs", ListenDSN: "host=pg.example dbname=jobs", Listen: true,
				Schema: "jd", Queue: "mail", LeaseTTL: Duration(20 * time.Second), PollInterval: Duration(250 * time.Millisecond),
				Retention: 0, MaxPayload: 1 << 20}},
		Control: service.ControlSettings{Socket: "/run/jd/control.sock"},
		Log: Log{LogSettings: service.LogSettings{Level: "trace", JobOutput: "debug", Format: "json",
			Target: "file", File: "/var/log/jd/daemon.log", JobFacility: "local3", JobIdentifier: "tool"},
			JobLog: "/var/log/jd/jobs.log"},
	}
	c.file, c.idx = "", nil
	if cr := credOf(c); cr == nil || cr.Uid != 0 || cr.Gid != 0 {
		t.Errorf("credential of root:0 = %+v", cr)
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Load =\n%+v\nwant\n%+v", c, want)
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		in      any // string or int64, as the TOML decoder passes it
		want    time.Duration
		wantErr string
	}{
		{"30s", 30 * time.Second, ""},
		{"1m30s", 90 * time.Second, ""},
		{"500ms", 500 * time.Millisecond, ""},
		{" 2h ", 2 * time.Hour, ""},
		{"0", 0, ""},
		{"0s", 0, ""},
		{int64(0), 0, ""},
		{"-5s", -5 * time.Second, ""}, // refused by Validate, with the key
		{"30", 0, `"30" has no unit`},
		{"1.5", 0, `"1.5" has no unit`},
		{int64(30), 0, `30 has no unit`},
		{"soon", 0, `invalid duration "soon"`},
		{"", 0, `invalid duration ""`},
		{true, 0, "not a boolean"},
		{1.5, 0, "not a float"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.in), func(t *testing.T) {
			var d Duration
			err := d.UnmarshalTOML(tt.in)
			checkErr(t, err, tt.wantErr)
			if err == nil && time.Duration(d) != tt.want {
				t.Errorf("got %v, want %v", time.Duration(d), tt.want)
			}
		})
	}
	if b, _ := Duration(90 * time.Second).MarshalText(); string(b) != "1m30s" {
		t.Errorf("MarshalText = %q", b)
	}
}

func TestSize(t *testing.T) {
	tests := []struct {
		in      any
		want    Size
		wantErr string
	}{
		{"4096", 4096, ""},
		{int64(4096), 4096, ""},
		{"512B", 512, ""},
		{"10KB", 10 << 10, ""},
		{"10KiB", 10 << 10, ""},
		{"10k", 10 << 10, ""},
		{"64MiB", 64 << 20, ""},
		{"64 MiB", 64 << 20, ""},
		{"64mib", 64 << 20, ""},
		{"64M", 64 << 20, ""},
		{"64MB", 64 << 20, ""},
		{"1G", 1 << 30, ""},
		{"2TiB", 2 << 40, ""},
		{"0", 0, ""}, // refused by Validate, with the key
		{"1.5GiB", 0, `unknown unit ".5GiB"`},
		{"64XB", 0, `unknown unit "XB"`},
		{"MiB", 0, "invalid size"},
		{"-1", 0, "invalid size"},
		{int64(-1), 0, "negative"},
		{"9999999999999999999", 0, "too large"},
		{"9000000TiB", 0, "too large"},
		{false, 0, "not a boolean"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.in), func(t *testing.T) {
			var s Size
			err := s.UnmarshalTOML(tt.in)
			checkErr(t, err, tt.wantErr)
			if err == nil && s != tt.want {
				t.Errorf("got %d, want %d", s, tt.want)
			}
		})
	}
	for s, want := range map[Size]string{64 << 20: "64MiB", 1536: "1536B", 3 << 10: "3KiB", 0: "0B", 1 << 40: "1TiB"} {
		if got := s.String(); got != want {
			t.Errorf("Size(%d).String() = %q, want %q", int64(s), got, want)
		}
		var back Size
		if err := back.UnmarshalText([]byte(s.String())); err != nil || back != s {
			t.Errorf("Size round trip %q = %d, %v", s, back, err)
		}
	}
}

func TestSignal(t *testing.T) {
	tests := []struct {
		in      any
		want    syscall.Signal
		wantErr string
	}{
		{"SIGTERM", syscall.SIGTERM, ""},
		{"TERM", syscall.SIGTERM, ""},
		{"sigterm", syscall.SIGTERM, ""},
		{"15", syscall.SIGTERM, ""},
		{int64(15), syscall.SIGTERM, ""},
		{"SIGKILL", syscall.SIGKILL, ""},
		{"hup", syscall.SIGHUP, ""},
		{"USR1", syscall.SIGUSR1, ""},
		{"40", syscall.Signal(40), ""},
		{"SIGTREM", 0, `unknown signal "SIGTREM" (did you mean "SIGTERM"?)`},
		{"NOPE", 0, `unknown signal "NOPE"`},
		{"0", 0, "out of range"},
		{"65", 0, "out of range"},
		{int64(-1), 0, "out of range"},
		{"", 0, "unknown signal"},
		{1.0, 0, "not a float"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.in), func(t *testing.T) {
			var s Signal
			err := s.UnmarshalTOML(tt.in)
			checkErr(t, err, tt.wantErr)
			if err == nil && syscall.Signal(s) != tt.want {
				t.Errorf("got %v, want %v", s, tt.want)
			}
		})
	}
	if got := Signal(syscall.SIGTERM).String(); got != "SIGTERM" {
		t.Errorf("String = %q", got)
	}
	if got := Signal(40).String(); got != "40" {
		t.Errorf("String = %q", got)
	}
}

func TestRelativePaths(t *testing.T) {
	dir := t.TempDir()
	tool(t, filepath.Join(dir, "etc"))
	if err := os.Mkdir(filepath.Join(dir, "etc", "work"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := writeFile(t, dir, "etc/config.toml", `
[daemon]
pid_file = "run/jd.pid"
[job]
command = ["bin/tool", "{path}"]
working_dir = "work"
[source.spool]
dir = "../spool"
[control]
socket = "run/control.sock"
[log]
joblog = "./log/jobs.log"
`, 0o644)
	t.Chdir(t.TempDir()) // paths must not depend on the working directory

	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ key, got, want string }{
		{"pid_file", c.Daemon.PIDFile, dir + "/etc/run/jd.pid"},
		{"command[0]", c.Job.Command[0], dir + "/etc/bin/tool"},
		{"working_dir", c.Job.WorkingDir, dir + "/etc/work"},
		{"spool.dir", c.Source.Spool.Dir, dir + "/spool"},
		{"socket", c.Control.Socket, dir + "/etc/run/control.sock"},
		{"joblog", c.Log.JobLog, dir + "/etc/log/jobs.log"},
	} {
		if tt.got != tt.want {
			t.Errorf("%s = %q, want %q", tt.key, tt.got, tt.want)
		}
	}

	// A relative path to the file itself works too.
	t.Chdir(dir)
	if c, err = Load("etc/config.toml"); err != nil {
		t.Fatal(err)
	}
	if want := dir + "/etc/run/jd.pid"; c.Daemon.PIDFile != want {
		t.Errorf("pid_file = %q, want %q", c.Daemon.PIDFile, want)
	}
}

func TestCommandFromPATH(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "bin/mytool", "#!/bin/sh\n", 0o755)
	t.Setenv("PATH", "/nonexistent:"+filepath.Join(dir, "bin"))
	path := writeFile(t, dir, "config.toml", "[job]\ncommand = [\"mytool\", \"{id}\"]\n", 0o644)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "bin/mytool"); c.Job.Command[0] != want {
		t.Errorf("command[0] = %q, want %q", c.Job.Command[0], want)
	}

	// A relative directory in PATH is not trusted (exec.ErrDot).
	t.Chdir(dir)
	t.Setenv("PATH", "bin")
	if _, err = Load(path); err == nil || !strings.Contains(err.Error(), `job.command: program "mytool" was found as "bin/mytool" through a relative directory in PATH`) {
		t.Errorf("Load with PATH=bin: %v", err)
	}
}

// TestErrors checks that each mistake is reported with the file, the line,
// the key and a message that says what to do.
func TestErrors(t *testing.T) {
	dir := t.TempDir()
	prog := tool(t, dir)
	writeFile(t, dir, "notexec", "#!/bin/sh\n", 0o644)
	cmd := withCommand(prog)
	// A postgres source, and its [source.postgres] table, whose keys
	// start at line 6.
	pg := "[job]\ncommand = [\"" + prog + "\", \"{id}\"]\n[source]\ntype = \"postgres\"\n[source.postgres]\n"
	tests := []struct {
		name     string
		text     string
		wantLine int
		wantKey  string
		wantMsg  string
	}{
		// Unknown keys.
		{"typo", "[pool]\nmax_children = 2\n\n# comment\nmax_chidren = 3\n" + cmd, 5, "pool.max_chidren",
			`unknown key "max_chidren" in [pool] (did you mean "max_children"?)`},
		{"case", cmd + "[log]\nLevel = \"debug\"\n", 4, "log.Level", `unknown key "Level" in [log] (did you mean "level"?)`},
		{"wrong table", cmd + "[daemon]\nstop_signal = \"INT\"\n", 4, "daemon.stop_signal",
			`unknown key "stop_signal" in [daemon] ("stop_signal" belongs in [pool])`},
		{"no suggestion", cmd + "[control]\nfrobnicate = 1\n", 4, "control.frobnicate",
			`unknown key "frobnicate" in [control]; the keys of [control] are socket`},
		{"table", cmd + "\n[sourc]\ntype = \"spool\"\n", 4, "sourc", `unknown table [sourc] (did you mean [source]?)`},
		{"subtable", cmd + "[source.spoool]\ndir = \"/x\"\n", 3, "source.spoool", `unknown table [source.spoool] (did you mean [source.spool]?)`},
		{"top-level key", "max_children = 3\n" + cmd, 1, "max_children",
			`unknown key "max_children" at the top level ("max_children" belongs in [pool])`},
		{"dotted", cmd + "pool.max_chidren = 3\n", 3, "job.pool", "unknown table [job.pool]; the keys of [job] are mode, command, working_dir"},
		{"dotted in table", "[job]\ncommand = [\"" + prog + "\"]\nenv.A = \"b\"\nretry.max = 3\n", 4, "job.retry", "unknown table [job.retry]"},
		{"inline", cmd + "[pool]\nx = { y = 1 }\n", 4, "pool.x", "unknown table [pool.x]"},
		{"unknown in inline table", "pool = { max_chidren = 3 }\n" + cmd, 1, "pool.max_chidren", `(did you mean "max_children"?)`},

		// Values of the wrong type, refused while decoding.
		{"int as string", "[pool]\nmax_children = \"four\"\n" + cmd, 2, "pool.max_children", "pool.max_children: want an integer, not a string"},
		{"table as value", "pool = 3\n" + cmd, 1, "pool", "pool: want a table, not an integer"},
		{"bool", "[pool]\nforward_signals = \"yes\"\n" + cmd, 2, "pool.forward_signals", "want a boolean, not a string"},
		{"array", "[job]\ncommand = \"/bin/true {path}\"\n", 2, "job.command", "want an array, not a string"},
		{"duration", "[daemon]\nstop_timeout = \"30\"\n" + cmd, 2, "daemon.stop_timeout", `daemon.stop_timeout: duration "30" has no unit: write it as "30s"`},
		{"duration int", "[pool]\n\nkill_grace = 10\n" + cmd, 3, "pool.kill_grace", `duration 10 has no unit`},
		{"size", cmd + "[source.spool]\nmax_payload = \"64 MegaBytes\"\n", 4, "source.spool.max_payload", `unknown unit "MegaBytes"`},
		{"signal", "[pool]\nstop_signal = \"SIGTREM\"\n" + cmd, 2, "pool.stop_signal", `did you mean "SIGTERM"?`},
		{"env not a table", cmd + "env = \"LANG=C\"\n", 3, "job.env", "job.env: want a table, not a string"},
		{"array of tables", "[[job]]\ncommand = [\"/bin/true\"]\n", 1, "job", "job: want a table, not an array of tables"},
		{"leaf as table", cmd + "[pool.max_children]\nx = 1\n", 3, "pool.max_children", "want an integer, not a table"},
		{"datetime", "[pool]\njob_timeout = 10:00:00\n" + cmd, 2, "pool.job_timeout", "not a date-time"},
		{"env value", cmd + "env = { A = 1 }\n", 3, "job.env.A", "want a string, not an integer"},

		// Values refused by Validate.
		{"max_children 0", "[pool]\nmax_children = 0\n" + cmd, 2, "pool.max_children", "pool.max_children: 0 is out of range: use 1 to 10000"},
		{"max_children big", "[pool]\nmax_children = 10001\n" + cmd, 2, "pool.max_children", "out of range"},
		{"jobs_per_child", "[pool]\njobs_per_child = -1\n" + cmd, 2, "pool.jobs_per_child", "-1 is out of range: use 0 to 1000000"},
		{"jobs_per_child in process mode", "[pool]\njobs_per_child = 5\n" + cmd, 2, "pool.jobs_per_child",
			`5: a process runs one job in job.mode "process"; set it to 1, or set mode = "worker" in [job]`},
		{"negative worker_max_age", "[pool]\nworker_max_age = \"-1m\"\n" + cmd, 2, "pool.worker_max_age", "-1m0s is negative"},
		{"worker_max_rss unit", "[pool]\nworker_max_rss = \"1 lot\"\n" + cmd, 2, "pool.worker_max_rss", `unknown unit "lot"`},
		{"worker_max_rss type", "[pool]\nworker_max_rss = 1.5\n" + cmd, 2, "pool.worker_max_rss", `want a size such as "64MiB", not a float`},
		{"mode", cmd + "mode = \"workers\"\n", 3, "job.mode", `unknown mode "workers" (did you mean "worker"?)`},
		{"mode far off", cmd + "mode = \"fork\"\n", 3, "job.mode", `unknown mode "fork": use "process" (a process per job) or "worker"`},
		{"worker placeholder", "[job]\nmode = \"worker\"\ncommand = [\"" + prog + "\", \"{slot}\", \"{path}\"]\n", 3, "job.command",
			"argument 2 is {path}, which names one job: in worker mode the command starts once per slot"},
		{"worker payload", "[job]\nmode = \"worker\"\ncommand = [\"" + prog + "\"]\n[source.spool]\nmax_payload = \"48MiB\"\n", 5,
			"source.spool.max_payload", "48MiB is too large for worker mode, where a job's file travels in its job line, in base64: use at most 47MiB"},
		{"reserved env JOBDAEMON_WORKER", cmd + "env = { JOBDAEMON_WORKER = \"x\" }\n", 3, "job.env.JOBDAEMON_WORKER", "set by the daemon"},
		{"max_attempts", cmd + "max_attempts = 0\n", 3, "job.max_attempts", "0 is out of range"},
		{"negative timeout", "[pool]\njob_timeout = \"-1s\"\n" + cmd, 2, "pool.job_timeout", "-1s is negative"},
		{"negative backoff", cmd + "backoff = \"-1m\"\n", 3, "job.backoff", "is negative"},
		{"zero kill_grace", "[pool]\nkill_grace = \"0s\"\n" + cmd, 2, "pool.kill_grace", `0s must be positive, such as "10s"`},
		{"zero idle", "[daemon]\nidle_interval = \"0\"\n" + cmd, 2, "daemon.idle_interval", "must be positive"},
		{"zero rescan", cmd + "[source.spool]\nrescan_interval = \"0s\"\n", 4, "source.spool.rescan_interval", "must be positive"},
		{"zero payload", cmd + "[source.spool]\nmax_payload = 0\n", 4, "source.spool.max_payload", "must be positive"},
		{"level", cmd + "[log]\nlevel = \"verbose\"\n", 4, "log.level", `unknown level "verbose": use "trace"`},
		{"job_output", cmd + "[log]\njob_output = \"loud\"\n", 4, "log.job_output", `unknown level "loud"`},
		{"format", cmd + "[log]\nformat = \"xml\"\n", 4, "log.format", `unknown format "xml": use "auto", "text" or "json"`},
		{"source type", cmd + "[source]\ntype = \"kafka\"\n", 4, "source.type", `unknown source "kafka": use "spool" or "postgres"`},
		{"postgres without dsn", cmd + "[source]\ntype = \"postgres\"\n", 4, "source.type", `"postgres" needs the database: set one of dsn, dsn_file or dsn_env`},
		{"two dsns", pg + "dsn = \"host=db\"\n\ndsn_env = \"DATABASE_URL\"\n", 8, "source.postgres.dsn_env", "dsn is set too: set exactly one of dsn, dsn_file and dsn_env"},
		{"three dsns", pg + "dsn_env = \"X\"\ndsn_file = \"/etc/pg\"\ndsn = \"host=db\"\n", 7, "source.postgres.dsn_file", "dsn is set too"},
		{"path with postgres", "[job]\ncommand = [\"" + prog + "\", \"{id}\", \"{path}\"]\n[source]\ntype = \"postgres\"\n[source.postgres]\ndsn = \"host=db\"\n", 2, "job.command",
			`argument 2 {path} is not filled in with source.type = "postgres", whose placeholders are {id}, {slot}, {attempt}; a postgres job is a row, not a file: its payload is the command's standard input`},
		{"name with postgres", "[source]\ntype = \"postgres\"\n[job]\ncommand = [\"" + prog + "\", \"{name}\"]\n[source.postgres]\ndsn = \"host=db\"\n", 4, "job.command", "argument 1 {name} is not filled in"},
		{"dsn_env name", pg + "dsn_env = \"A=B\"\n", 6, "source.postgres.dsn_env", `contains "="`},
		{"dsn_env inherited", "[job]\ncommand = [\"" + prog + "\"]\ninherit_env = [\"DATABASE_URL\"]\n[source]\ntype = \"postgres\"\n[source.postgres]\ndsn_env = \"DATABASE_URL\"\n", 7, "source.postgres.dsn_env", "would hand the database's password to every job"},
		{"schema", pg + "dsn = \"x\"\nschema = \"Jobs\"\n", 7, "source.postgres.schema", "lower-case letters"},
		{"queue", pg + "dsn = \"x\"\nqueue = \"\"\n", 7, "source.postgres.queue", "1 to 200 bytes"},
		{"lease_ttl", pg + "dsn = \"x\"\nlease_ttl = \"500ms\"\n", 7, "source.postgres.lease_ttl", "500ms is under the minimum of 1s"},
		{"poll_interval", pg + "dsn = \"x\"\npoll_interval = \"0s\"\n", 7, "source.postgres.poll_interval", "must be positive"},
		{"retention", pg + "dsn = \"x\"\nretention = \"-1h\"\n", 7, "source.postgres.retention", "is negative"},
		{"pg max_payload", pg + "dsn = \"x\"\nmax_payload = \"2GiB\"\n", 7, "source.postgres.max_payload", "use 1B to 1GiB"},
		{"listen_dsn without listen", pg + "dsn = \"x\"\nlisten = false\nlisten_dsn = \"host=pg\"\n", 8, "source.postgres.listen_dsn", "listen = false"},
		{"pg typo", pg + "dsn = \"x\"\nlease_tll = \"5s\"\n", 7, "source.postgres.lease_tll", `did you mean "lease_ttl"?`},
		{"empty spool dir", cmd + "[source.spool]\ndir = \"\"\n", 4, "source.spool.dir", "required"},
		{"long socket", cmd + "[control]\nsocket = \"/" + strings.Repeat("s", 120) + "\"\n", 4, "control.socket", "a Unix socket path holds at most 107"},
		{"missing user", "[daemon]\nuser = \"no-such-user-jd\"\n" + cmd, 2, "daemon.user", `no user "no-such-user-jd" on this host`},
		{"missing uid", "[daemon]\nuser = \"4242424\"\n" + cmd, 2, "daemon.user", `no user "4242424"`},
		{"missing group", "[daemon]\nuser = \"root\"\ngroup = \"no-such-group-jd\"\n" + cmd, 3, "daemon.group", `no group "no-such-group-jd"`},
		{"reserved env", cmd + "env = { JOB_ID = \"x\" }\n", 3, "job.env.JOB_ID", "JOB_ID is set by the daemon"},
		{"reserved env JOB_PATH", cmd + "env = { JOB_PATH = \"x\" }\n", 3, "job.env.JOB_PATH", "JOB_PATH is set by the daemon"},
		{"inherit NOTIFY_SOCKET", cmd + "inherit_env = [\"NOTIFY_SOCKET\"]\n", 3, "job.inherit_env", "never passed to jobs"},
		{"missing working_dir", cmd + "working_dir = \"nope\"\n", 3, "job.working_dir", `"` + dir + `/nope": no such file or directory`},
		{"working_dir file", cmd + "working_dir = \"notexec\"\n", 3, "job.working_dir", "is not a directory"},

		// The command.
		{"no command", "[job]\ncommand = []\n", 2, "job.command", "required: set the program"},
		{"empty program", "[job]\ncommand = [\"\"]\n", 2, "job.command", "the program (the first element) is empty"},
		{"not executable", "[job]\ncommand = [\"notexec\"]\n", 2, "job.command", "not in PATH"},
		{"not executable path", "[job]\ncommand = [\"./notexec\"]\n", 2, "job.command", `program "` + dir + `/notexec" is not executable (mode -rw-r--r--): chmod +x it`},
		{"missing program", "[job]\n\ncommand = [\"/no/such/prog\"]\n", 3, "job.command", `program "/no/such/prog": no such file or directory`},
		{"directory", "[job]\ncommand = [\"/tmp\"]\n", 2, "job.command", `program "/tmp" is a directory`},
		{"placeholder as program", "[job]\ncommand = [\"{path}\"]\n", 2, "job.command", "cannot be a placeholder"},
		{"placeholder inside", "[job]\ncommand = [\"" + prog + "\", \"{path}\", \"{path}.png\"]\n", 2, "job.command",
			`argument 2 "{path}.png" has the placeholder {path} inside a longer argument: placeholders must be whole arguments, as there is no shell`},
		{"placeholder prefix", "[job]\ncommand = [\"" + prog + "\", \"--out={id}\"]\n", 2, "job.command", "placeholders must be whole arguments"},
		{"unknown placeholder", "[job]\ncommand = [\"" + prog + "\", \"{paht}\"]\n", 2, "job.command", `unknown placeholder {paht} (did you mean {path}?)`},
		{"parallel placeholder", "[job]\ncommand = [\"" + prog + "\", \"{}\"]\n", 2, "job.command", `GNU parallel's {}`},

		// Syntax.
		{"syntax", cmd + "[pool]\nmax_children = = 3\n", 4, "", "invalid TOML: "},
		{"unterminated", "[pool\n" + cmd, 1, "", "invalid TOML: "},
		{"duplicate", "[pool]\nmax_children = 1\nmax_children = 2\n" + cmd, 3, "", "invalid TOML: "},
		{"newline in string", "[job]\ncommand = [\"/bin/true\",\n  \"a\nb\"]\n", 3, "", "invalid TOML: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, dir, "config.toml", tt.text, 0o644)
			_, err := Load(path)
			if err == nil {
				t.Fatalf("Load succeeded; want an error about %s", tt.wantKey)
			}
			for _, e := range errorList(t, err) {
				if e.Key != tt.wantKey || !strings.Contains(e.Msg, tt.wantMsg) {
					continue
				}
				if e.File != path || e.Line != tt.wantLine {
					t.Errorf("error at %s:%d, want %s:%d: %v", e.File, e.Line, path, tt.wantLine, e)
				}
				if tt.wantKey != "" && !strings.HasPrefix(e.Msg, tt.wantKey+": ") && !strings.Contains(e.Msg, "unknown") {
					t.Errorf("message does not start with the key: %q", e.Msg)
				}
				if want := fmt.Sprintf("%s:%d: %s", path, tt.wantLine, e.Msg); e.Error() != want {
					t.Errorf("Error() = %q, want %q", e.Error(), want)
				}
				return
			}
			t.Errorf("Load error:\n%v\nwant key %q with %q", err, tt.wantKey, tt.wantMsg)
		})
	}
}

// TestAllErrorsAtOnce checks that problems are collected, not only the
// first, and come in the order of their lines.
func TestAllErrorsAtOnce(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "config.toml", `[pool]
max_chidren = 3
stop_signal = "SIGFOO"
[log]
levle = "debug"
format = 3
`, 0o644)
	_, err := Load(path)
	var lines []int
	for _, e := range errorList(t, err) {
		lines = append(lines, e.Line)
	}
	if want := []int{2, 3, 5, 6}; !reflect.DeepEqual(lines, want) {
		t.Errorf("lines %v, want %v; errors:\n%v", lines, want, err)
	}

	path = writeFile(t, dir, "config.toml", `[job]
command = []
[pool]
max_children = 0
jobs_per_child = -1
[log]
level = "x"
`, 0o644)
	_, err = Load(path)
	lines = lines[:0]
	for _, e := range errorList(t, err) {
		lines = append(lines, e.Line)
	}
	if want := []int{2, 4, 5, 7}; !reflect.DeepEqual(lines, want) {
		t.Errorf("lines %v, want %v; errors:\n%v", lines, want, err)
	}
}

func TestUsers(t *testing.T) {
	dir := t.TempDir()
	cmd := withCommand(tool(t, dir))
	for _, who := range []string{`user = "root"`, `user = "0"`, "user = \"root\"\ngroup = \"root\"", "user = \"0\"\ngroup = \"0\""} {
		path := writeFile(t, dir, "config.toml", cmd+"[daemon]\n"+who+"\n", 0o644)
		if _, err := Load(path); err != nil {
			t.Errorf("%s: %v", who, err)
		}
	}
	// A group alone would be ignored: it is refused instead.
	path := writeFile(t, dir, "config.toml", cmd+"[daemon]\ngroup = \"root\"\n", 0o644)
	checkErr(t, func() error { _, err := Load(path); return err }(), "daemon.group \"root\" is set without daemon.user")
}

func TestReadError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing.toml")
	_, err := Load(path)
	var e *Error
	if !errors.As(err, &e) || e.File != path || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load(missing) = %#v", err)
	}
	if want := path + ": cannot read the configuration file: no such file or directory"; err.Error() != want {
		t.Errorf("Error() = %q, want %q", err, want)
	}
}

func TestTooManyErrors(t *testing.T) {
	var b strings.Builder
	b.WriteString("[pool]\n")
	for i := range 30 {
		fmt.Fprintf(&b, "unknown%d = 1\n", i)
	}
	path := writeFile(t, t.TempDir(), "config.toml", b.String(), 0o644)
	_, err := Load(path)
	errs := errorList(t, err)
	if len(errs) != maxErrors+1 || errs[maxErrors].Msg != "and 10 more problems" || errs[maxErrors-1].Line != maxErrors+1 {
		t.Errorf("Load =\n%v", err)
	}
}

func TestTooLarge(t *testing.T) {
	path := writeFile(t, t.TempDir(), "config.toml", strings.Repeat("# comment\n", maxFileSize/10+1), 0o644)
	_, err := Load(path)
	if err == nil || !strings.Contains(err.Error(), "larger than 1MiB") {
		t.Errorf("Load = %v", err)
	}
}

func TestErrorFormat(t *testing.T) {
	for _, tt := range []struct {
		e    Error
		want string
	}{
		{Error{File: "config.toml", Line: 7, Msg: "m"}, "config.toml:7: m"},
		{Error{File: "config.toml", Msg: "m"}, "config.toml: m"},
		{Error{Msg: "m"}, "m"},
	} {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("%+v.Error() = %q, want %q", tt.e, got, tt.want)
		}
	}

	// Validate works without a file: no file, no line.
	c := Default()
	c.Pool.MaxChildren = -1
	c.Job.Command = []string{"/bin/sh"}
	if err := c.Validate(); err == nil || err.Error() != "pool.max_children: -1 is out of range: use 1 to 10000" {
		t.Errorf("Validate = %v", err)
	}
	c = Default()
	c.Job.Command = []string{"/bin/sh"}
	c.Daemon.PIDFile = "rel.pid"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), `daemon.pid_file: "rel.pid" is relative`) {
		t.Errorf("Validate = %v", err)
	}
}

// TestKeyLines checks the line finder on the shapes TOML allows.
func TestKeyLines(t *testing.T) {
	text := `# comment
top = 1
a.b.c = 2
[pool]
max = 3
x.y = 4
inl = { p = 1, q = { r = 2 } }
[deep.er.table]
k = 5
["quoted key"]
"x y" = 6
`
	var top map[string]toml.Primitive
	md, err := toml.Decode(text, &top)
	if err != nil {
		t.Fatal(err)
	}
	idx := newLineIndex(&md, top)
	for key, want := range map[string]int{
		"top": 2, "a.b.c": 3, "pool": 4, "pool.max": 5, "pool.x.y": 6, "pool.inl": 7, "pool.inl.q.r": 7,
		"deep.er.table": 8, "deep.er.table.k": 9, `"quoted key"`: 10, `"quoted key"."x y"`: 11,
		"a": 0, "a.b": 0, "deep": 0, "missing": 0, "pool.missing": 0,
	} {
		if got := idx.line(key); got != want {
			t.Errorf("line of %s = %d, want %d", key, got, want)
		}
	}
	var nilIdx *lineIndex
	if nilIdx.line("pool") != 0 {
		t.Error("nil index found a line")
	}
}

func TestSuggest(t *testing.T) {
	names := []string{"max_children", "jobs_per_child", "job_timeout", "kill_grace"}
	for in, want := range map[string]string{
		"max_chidren": "max_children", "MAX_CHILDREN": "max_children", "maxchildren": "max_children",
		"kill_grcae": "kill_grace", "job_timout": "job_timeout", "x": "", "completely_else": "",
	} {
		if got := suggest(in, names); got != want {
			t.Errorf("suggest(%q) = %q, want %q", in, got, want)
		}
	}
}

func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("unexpected error: %v", err)
	case want != "" && err == nil:
		t.Errorf("no error, want %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Errorf("error %q, want %q", err, want)
	}
}

// FuzzLoad feeds arbitrary files to Load, which must return a config or
// *Errors, and never panic.
func FuzzLoad(f *testing.F) {
	f.Add("")
	f.Add("[job]\ncommand = [\"/bin/true\", \"{path}\"]\n")
	f.Add("[pool]\nmax_chidren = 3\n")
	f.Add("[daemon]\nstop_timeout = \"30\"\n[pool]\nstop_signal = 15\n[source.spool]\nmax_payload = \"64MiB\"\n")
	f.Add("pool = { max_children = 3 }\njob.env.A = \"b\"\n[[arr]]\nx = 1\n")
	f.Add("a = [1, {b = 2}]\n[x.y.z]\n\"q\" = 3\n")
	f.Add("[job]\ncommand = [\"sh\", \"{path}.png\", \"{}\"]\nenv = { JOB_ID = 1 }\n")
	dir := f.TempDir()
	path := filepath.Join(dir, "config.toml")
	f.Fuzz(func(t *testing.T, text string) {
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := Load(path)
		if (c == nil) == (err == nil) {
			t.Fatalf("Load = %v, %v", c, err)
		}
		if err != nil {
			errorList(t, err)
		}
	})
}

func TestCredential(t *testing.T) {
	dir := t.TempDir()
	cmd := withCommand(tool(t, dir))
	load := func(daemon string) *Config {
		t.Helper()
		c, err := Load(writeFile(t, dir, "config.toml", cmd+"[daemon]\n"+daemon+"\n", 0o644))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if cr := credOf(load("")); cr != nil {
		t.Errorf("no user: %+v, want nil", cr)
	}
	cr := credOf(load(`user = "root"`))
	if cr == nil || cr.Uid != 0 || cr.Gid != 0 || !slices.Contains(cr.Groups, 0) {
		t.Errorf("root: %+v", cr)
	}
	nogroup, err := user.LookupGroup("nogroup")
	if err != nil {
		t.Fatalf("this test needs the group nogroup: %v", err)
	}
	cr = credOf(load("user = \"0\"\ngroup = \"nogroup\""))
	if cr == nil || cr.Uid != 0 || strconv.Itoa(int(cr.Gid)) != nogroup.Gid {
		t.Errorf("uid 0 with group nogroup (%s): %+v", nogroup.Gid, cr)
	}
}

// The DSN of a postgres source comes from exactly one place; a dsn_file
// that others may read or change is refused before it is read, with the
// line of dsn_file, and no error shows the DSN.
func TestPostgresDSN(t *testing.T) {
	dir := t.TempDir()
	prog := tool(t, dir)
	const secret = "host=db user=jd password=s3cret-Pw"
	load := func(t *testing.T, table string) *Config {
		t.Helper()
		path := writeFile(t, dir, "config.toml", "[job]\ncommand = [\""+prog+"\", \"{id}\"]\n"+
			"[source]\ntype = \"postgres\"\n[source.postgres]\n"+table, 0o644)
		c, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	dsnFile := func(t *testing.T, content string, mode os.FileMode) *Config {
		t.Helper()
		p := writeFile(t, dir, "secrets/pg.dsn", content, 0o600)
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		return load(t, "\ndsn_file = \"secrets/pg.dsn\"\n") // line 7
	}
	check := func(t *testing.T, c *Config, want, wantErr string) {
		t.Helper()
		got, err := c.PostgresDSN()
		switch {
		case wantErr == "" && (err != nil || got != want):
			t.Errorf("PostgresDSN() = %q, %v; want %q", got, err, want)
		case wantErr != "" && err == nil:
			t.Errorf("PostgresDSN() = %q; want an error with %q", got, wantErr)
		case wantErr != "":
			if !strings.Contains(err.Error(), wantErr) {
				t.Errorf("PostgresDSN() error %q; want %q", err, wantErr)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("the error shows the password: %v", err)
			}
			var e *Error
			if !errors.As(err, &e) || e.File != c.file || e.Line == 0 {
				t.Errorf("error without file and line: %#v", err)
			}
		}
	}

	t.Run("dsn", func(t *testing.T) { check(t, load(t, "dsn = \""+secret+"\"\n"), secret, "") })
	t.Run("file", func(t *testing.T) {
		c := dsnFile(t, "\n  "+secret+"\n\n", 0o600)
		if c.Source.Postgres.DSNFile != filepath.Join(dir, "secrets/pg.dsn") {
			t.Errorf("dsn_file %q is not made absolute", c.Source.Postgres.DSNFile)
		}
		check(t, c, secret, "")
		// Read once: the daemon reads it before dropping its privileges.
		os.Chmod(c.Source.Postgres.DSNFile, 0o644)
		check(t, c, secret, "")
	})
	t.Run("file 0640", func(t *testing.T) { check(t, dsnFile(t, secret, 0o640), secret, "") })
	t.Run("file 0400", func(t *testing.T) { check(t, dsnFile(t, secret, 0o400), secret, "") })
	t.Run("world-readable", func(t *testing.T) {
		check(t, dsnFile(t, secret, 0o644), "", ":7: source.postgres.dsn_file: \""+dir+"/secrets/pg.dsn\" is open to other users (mode 0644)")
	})
	t.Run("group-writable", func(t *testing.T) { check(t, dsnFile(t, secret, 0o660), "", "may be changed by its group (mode 0660)") })
	t.Run("empty", func(t *testing.T) { check(t, dsnFile(t, " \n", 0o600), "", "is empty") })
	t.Run("missing", func(t *testing.T) {
		check(t, load(t, "dsn_file = \"/nonexistent/pg.dsn\"\n"), "", `"/nonexistent/pg.dsn": no such file or directory`)
	})
	t.Run("directory", func(t *testing.T) {
		os.MkdirAll(filepath.Join(dir, "dsndir"), 0o700)
		check(t, load(t, "dsn_file = \"dsndir\"\n"), "", "is not a regular file")
	})
	t.Run("another user's", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to give the file away")
		}
		c := dsnFile(t, secret, 0o600)
		if err := os.Chown(c.Source.Postgres.DSNFile, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		check(t, c, "", "belongs to uid 65534, neither root nor this process's user")
	})
	t.Run("env", func(t *testing.T) {
		t.Setenv("JD_TEST_DSN", secret)
		check(t, load(t, "dsn_env = \"JD_TEST_DSN\"\n"), secret, "")
	})
	t.Run("env unset", func(t *testing.T) {
		check(t, load(t, "dsn_env = \"JD_TEST_NO_SUCH_DSN\"\n"), "", ":6: source.postgres.dsn_env: the environment variable JD_TEST_NO_SUCH_DSN is not set")
	})
}

// Each source declares its placeholders; the spool's include the file's.
func TestPlaceholdersPerSource(t *testing.T) {
	if got := SourceTypes(); !slices.Equal(got, []string{"spool", "postgres"}) {
		t.Errorf("SourceTypes() = %v", got)
	}
	if got := Placeholders("spool"); !slices.Equal(got, placeholders) {
		t.Errorf("spool placeholders %v, want all of %v", got, placeholders)
	}
	if got := Placeholders("postgres"); slices.Contains(got, PlaceholderPath) || slices.Contains(got, PlaceholderName) || !slices.Contains(got, PlaceholderID) {
		t.Errorf("postgres placeholders %v", got)
	}
	if Placeholders("kafka") != nil {
		t.Error("an unknown source has placeholders")
	}
}

// CheckSource looks at the source alone: a host that only submits need
// not have the job's program.
func TestCheckSource(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "config.toml", "[job]\ncommand = [\"/nonexistent/prog\", \"{path}\"]\n[source]\ntype = \"postgres\"\n[source.postgres]\ndsn = \"host=db\"\n", 0o644)
	c, err := Parse(path)
	if err != nil {
		t.Fatal(err)
	}
	errs := errorList(t, c.CheckSource())
	if len(errs) != 1 || errs[0].Key != "job.command" || errs[0].Line != 2 || !strings.Contains(errs[0].Msg, "{path} is not filled in") {
		t.Errorf("CheckSource() = %v; want only the {path} placeholder refused, at line 2", errs)
	}
	if c.Path() != path {
		t.Errorf("Path() = %q, want %q", c.Path(), path)
	}
}

// The postgres examples of the documentation and of both config.toml
// files (commented out there) name keys that exist, with valid values.
func TestPostgresExamples(t *testing.T) {
	dir := t.TempDir()
	prog := tool(t, dir)
	check := func(t *testing.T, text string) {
		t.Helper()
		path := writeFile(t, dir, "config.toml", text, 0o644)
		c, err := Parse(path)
		if err == nil {
			err = c.CheckSource()
		}
		if err != nil {
			t.Fatalf("%v\nin:\n%s", err, text)
		}
		if c.Source.Type != "postgres" {
			t.Fatalf("source type %q in:\n%s", c.Source.Type, text)
		}
	}
	read := func(t *testing.T, name string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join("..", "..", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	job := "[job]\ncommand = [\"" + prog + "\", \"{id}\"]\n"
	for _, doc := range []string{"docs/POSTGRES.md", "README.md"} {
		t.Run(doc, func(t *testing.T) {
			blocks := regexp.MustCompile("(?s)```toml\n(.*?)```").FindAllStringSubmatch(read(t, doc), -1)
			n := 0
			for _, b := range blocks {
				if !strings.Contains(b[1], `type = "postgres"`) {
					continue
				}
				n++
				// Indented inside a list item.
				check(t, job+regexp.MustCompile(`(?m)^ +`).ReplaceAllString(b[1], ""))
			}
			if n == 0 {
				t.Errorf("no postgres example in %s", doc)
			}
		})
	}
	for _, file := range []string{"config.toml", "dist/config.toml"} {
		t.Run(file, func(t *testing.T) {
			text := read(t, file)
			i := strings.Index(text, "\n#[source.postgres]\n")
			if i < 0 {
				t.Fatalf("no commented-out [source.postgres] in %s", file)
			}
			block := text[i+1:]
			block = block[:strings.Index(block+"\n\n", "\n\n")]
			var keys []string
			dsnSeen := false
			for _, line := range strings.Split(block, "\n") {
				k, _, isKey := strings.Cut(strings.TrimPrefix(line, "#"), " = ")
				switch {
				case line == "#[source.postgres]":
					keys = append(keys, line[1:])
				case !isKey || strings.Contains(k, " "):
					continue // a comment
				case strings.HasPrefix(k, "dsn") && dsnSeen:
					continue // exactly one of them
				default:
					dsnSeen = dsnSeen || strings.HasPrefix(k, "dsn")
					keys = append(keys, line[1:])
				}
			}
			if !dsnSeen || len(keys) < 5 {
				t.Fatalf("too little in the example of %s: %q", file, keys)
			}
			check(t, job+"[source]\ntype = \"postgres\"\n"+strings.Join(keys, "\n")+"\n")
		})
	}
}

// Worker mode has defaults of its own for the keys a file does not set;
// those it sets keep their values.
func TestWorkerModeDefaults(t *testing.T) {
	dir := t.TempDir()
	prog := tool(t, dir)
	job := "[job]\nmode = \"worker\"\ncommand = [\"" + prog + "\", \"{slot}\"]\n"
	c, err := Load(writeFile(t, dir, "config.toml", job, 0o644))
	if err != nil {
		t.Fatal(err)
	}
	if c.Pool.JobsPerChild != DefaultWorkerJobs || c.Source.Spool.MaxPayload != DefaultWorkerPayload {
		t.Errorf("worker mode defaults: jobs_per_child %d, max_payload %v", c.Pool.JobsPerChild, c.Source.Spool.MaxPayload)
	}
	c, err = Load(writeFile(t, dir, "config.toml", job+"[pool]\njobs_per_child = 0\n[source.spool]\nmax_payload = \"1MiB\"\n", 0o644))
	if err != nil {
		t.Fatal(err)
	}
	if c.Pool.JobsPerChild != 0 || c.Source.Spool.MaxPayload != 1<<20 {
		t.Errorf("worker mode with values: jobs_per_child %d, max_payload %v", c.Pool.JobsPerChild, c.Source.Spool.MaxPayload)
	}
	c, err = Load(writeFile(t, dir, "config.toml", withCommand(prog), 0o644))
	if err != nil {
		t.Fatal(err)
	}
	if c.Job.Mode != ModeProcess || c.Pool.JobsPerChild != 1 || c.Source.Spool.MaxPayload != 64<<20 {
		t.Errorf("process mode: %q, jobs_per_child %d, max_payload %v", c.Job.Mode, c.Pool.JobsPerChild, c.Source.Spool.MaxPayload)
	}
}

// A job line with a payload of MaxWorkerPayload, in base64, and a long id
// and path fits in what the pool carries.
func TestMaxWorkerPayloadFits(t *testing.T) {
	line := base64.StdEncoding.EncodedLen(int(MaxWorkerPayload)) + 64<<10
	if line > pool.MaxMessage {
		t.Errorf("a job line of %d bytes, more than pool.MaxMessage (%d)", line, pool.MaxMessage)
	}
}

// credOf returns the credential that c's [daemon] user and group resolve
// to, as the daemon resolves it (service.Settings.Credential).
func credOf(c *Config) *syscall.Credential {
	st := c.Settings()
	cr, _ := st.Credential()
	return cr
}
