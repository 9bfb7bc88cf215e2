package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/jobdaemon/jobdaemon/internal/pgtest"
)

// The PostgreSQL source, end to end: the real binary against a throwaway
// server (one for the package, a database per test), several daemons on
// one queue, the CLI, the control socket, and what goes wrong.

// pgJobScript is the job of these tests. It checks that {id} is JOB_ID,
// keeps its payload (standard input) in $OUT/payload/$JOB_ID, records the
// run in $OUT/runs as "id tag attempt", then does what the payload's
// first word says: "sleep-first N" sleeps on the first attempt only,
// "fail" exits 3.
const pgJobScript = `#!/bin/sh
[ "$1" = "$JOB_ID" ] || { echo "{id} $1 is not JOB_ID $JOB_ID" >&2; exit 70; }
cat >"$OUT/payload/$JOB_ID"
echo "$JOB_ID $TAG $JOB_ATTEMPT" >>"$OUT/runs"
read -r what arg <"$OUT/payload/$JOB_ID" || true
case "$what" in
sleep-first) [ "$JOB_ATTEMPT" -ge 2 ] || exec sleep "$arg" ;;
fail) exit 3 ;;
esac
`

// pgConf describes one daemon's configuration.
type pgConf struct {
	db          string // the [source.postgres] line(s) that name the database
	out         string // where jobs write: shared by the daemons of a test
	tag         string // TAG in the jobs' environment
	maxChildren int    // default 8
	source      string // more [source.postgres] keys
}

// pgDSN is the [source.postgres] line for dsn.
func pgDSN(dsn string) string { return fmt.Sprintf("dsn = %q", dsn) }

// newPgEnv writes a configuration for a postgres source in a directory of
// its own (PID file, control socket).
func newPgEnv(t *testing.T, c pgConf) *env {
	t.Helper()
	dir := t.TempDir()
	script := filepath.Join(dir, "job.sh")
	if err := os.WriteFile(script, []byte(pgJobScript), 0o755); err != nil {
		t.Fatal(err)
	}
	if c.out == "" {
		c.out = dir
	}
	if err := os.MkdirAll(filepath.Join(c.out, "payload"), 0o755); err != nil {
		t.Fatal(err)
	}
	if c.maxChildren == 0 {
		c.maxChildren = 8
	}
	e := &env{t: t, dir: dir, config: filepath.Join(dir, "config.toml")}
	cfg := fmt.Sprintf(`
[daemon]
pid_file = "jobdaemon.pid"
idle_interval = "100ms"
stop_timeout = "5s"
[pool]
max_children = %d
kill_grace = "500ms"
[job]
command = [%q, "{id}"]
env = { OUT = %q, TAG = %q }
max_attempts = 3
backoff = "10ms"
[control]
socket = "control.sock"
[log]
format = "json"
level = "debug"
[source]
type = "postgres"
[source.postgres]
%s
poll_interval = "200ms"
%s
`, c.maxChildren, script, c.out, c.tag, c.db, c.source)
	if err := os.WriteFile(e.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

// startWith starts "jobdaemon run" with more environment variables; it is
// killed at the end of the test if it still runs.
func (e *env) startWith(vars ...string) *daemon {
	e.t.Helper()
	c := e.cmd("run")
	c.Env = append(c.Env, vars...)
	return e.launch(c)
}

// ready waits until the daemon has said it is ready.
func (e *env) ready(d *daemon) {
	e.t.Helper()
	e.waitFor("ready", d, func() bool { return strings.Contains(d.out.String(), `"msg":"ready"`) })
}

// pgConnect connects the test to dsn.
func pgConnect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// pgMigrated returns a fresh database with the queue's schema, made by
// "jobdaemon pg migrate" (twice: it is idempotent).
func pgMigrated(t *testing.T) string {
	t.Helper()
	dsn := pgtest.NewDB(t)
	e := newPgEnv(t, pgConf{db: pgDSN(dsn)})
	for range 2 {
		if code, out := e.run("pg", "migrate"); code != 0 || !strings.Contains(out, `schema "jobdaemon" is at version 1`) {
			t.Fatalf("pg migrate: exit %d\n%s", code, out)
		}
	}
	return dsn
}

// pgStates counts the jobs of the default queue by state.
func pgStates(t *testing.T, c *pgx.Conn) map[string]int {
	t.Helper()
	rows, err := c.Query(context.Background(), "SELECT state, count(*) FROM jobdaemon.jobs GROUP BY state")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for rows.Next() {
		var s string
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			t.Fatal(err)
		}
		got[s] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return got
}

func pgExec(t *testing.T, c *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := c.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// runs reads $OUT/runs: one "id tag attempt" line per run.
func runs(t *testing.T, out string) [][]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(out, "runs"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var lines [][]string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l != "" {
			lines = append(lines, strings.Fields(l))
		}
	}
	return lines
}

// "pg migrate" creates the schema and is idempotent; the daemon and
// submit on a database without it say to run it, and fail.
func TestPgMigrateAndMissingSchema(t *testing.T) {
	dsn := pgtest.NewDB(t)
	e := newPgEnv(t, pgConf{db: pgDSN(dsn)})
	hint := `jobdaemon pg migrate --config ` + e.config

	code, out := e.run("run")
	if code != 1 || !strings.Contains(out, "job queue schema not migrated") || !strings.Contains(out, hint) {
		t.Errorf("run without the schema: exit %d, want 1 and %q:\n%s", code, hint, tail(out))
	}
	c := e.cmd("submit", "-")
	c.Stdin = strings.NewReader("x")
	b, _ := c.CombinedOutput()
	if c.ProcessState.ExitCode() != 1 || !strings.Contains(string(b), hint) {
		t.Errorf("submit without the schema: exit %d, want 1 and %q:\n%s", c.ProcessState.ExitCode(), hint, b)
	}

	for i := range 2 {
		code, out := e.run("pg", "migrate")
		if code != 0 || !strings.Contains(out, `schema "jobdaemon" is at version 1`) {
			t.Fatalf("pg migrate #%d: exit %d\n%s", i+1, code, out)
		}
	}
	conn := pgConnect(t, dsn)
	var version int
	if err := conn.QueryRow(context.Background(), "SELECT max(version) FROM jobdaemon.schema_version").Scan(&version); err != nil || version != 1 {
		t.Fatalf("schema_version: %d, %v", version, err)
	}

	// Now the jobs go in and run; --drain stops once the queue is empty.
	for i := range 3 {
		c := e.cmd("submit", "-")
		c.Stdin = strings.NewReader(fmt.Sprintf("job %d\n", i))
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("submit: %v\n%s", err, out)
		}
	}
	if code, out := e.run("run", "--drain"); code != 0 {
		t.Fatalf("run --drain: exit %d\n%s", code, tail(out))
	}
	if got := pgStates(t, conn); got["completed"] != 3 || len(got) != 1 {
		t.Errorf("after the drain: %v, want 3 completed", got)
	}
}

// Two daemons, as two processes with their own configurations, on one
// queue: 2 000 jobs, each run exactly once, nothing left, and both took
// their share.
func TestPgTwoDaemons(t *testing.T) {
	dsn := pgMigrated(t)
	out := t.TempDir()
	a := newPgEnv(t, pgConf{db: pgDSN(dsn), out: out, tag: "a"})
	b := newPgEnv(t, pgConf{db: pgDSN(dsn), out: out, tag: "b"})
	da, db := a.start(), b.start()
	a.ready(da)
	b.ready(db)

	const n = 2000
	conn := pgConnect(t, dsn)
	start := time.Now()
	pgExec(t, conn, "SELECT jobdaemon.enqueue(convert_to('job ' || i, 'UTF8')) FROM generate_series(1, $1) i", n)
	pollUntil(t, "all jobs completed", 2*time.Minute, func() bool { return pgStates(t, conn)["completed"] == n },
		func() string { return fmt.Sprintf("%v\n%s", pgStates(t, conn), tail(da.out.String()+db.out.String())) })
	took := time.Since(start)
	for _, d := range []*daemon{da, db} {
		if err := d.stop(syscall.SIGTERM); err != nil {
			t.Errorf("daemon after TERM: %v\n%s", err, tail(d.out.String()))
		}
	}
	if got := pgStates(t, conn); got["completed"] != n || len(got) != 1 {
		t.Errorf("jobs by state: %v, want all %d completed", got, n)
	}

	var ids []string
	rows, err := conn.Query(context.Background(), "SELECT id::text FROM jobdaemon.jobs")
	if err != nil {
		t.Fatal(err)
	}
	ids, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	ran := map[string]int{}
	perTag := map[string]int{}
	for _, r := range runs(t, out) {
		ran[r[0]]++
		perTag[r[1]]++
	}
	for _, id := range ids {
		if ran[id] != 1 {
			t.Errorf("job %s ran %d times", id, ran[id])
		}
		delete(ran, id)
	}
	if len(ran) != 0 {
		t.Errorf("runs of jobs that are not in the table: %v", ran)
	}
	if perTag["a"] == 0 || perTag["b"] == 0 {
		t.Errorf("one daemon did all the work: %v", perTag)
	}
	t.Logf("%d jobs in %v on two daemons (race-detector builds), %v", n, took.Round(time.Millisecond), perTag)
}

// SIGKILL one daemon while its jobs run: once their leases expire, the
// other daemon's rescuer puts them back, it runs them, and each completes
// there, on its second attempt.
func TestPgDaemonKilled(t *testing.T) {
	dsn := pgMigrated(t)
	out := t.TempDir()
	const ttl = 2 * time.Second
	src := fmt.Sprintf("lease_ttl = %q", ttl.String())
	a := newPgEnv(t, pgConf{db: pgDSN(dsn), out: out, tag: "a", maxChildren: 4, source: src})
	b := newPgEnv(t, pgConf{db: pgDSN(dsn), out: out, tag: "b", maxChildren: 4, source: src})
	conn := pgConnect(t, dsn)
	pgExec(t, conn, "SELECT jobdaemon.enqueue(convert_to('sleep-first 60', 'UTF8')) FROM generate_series(1, 4)")

	da := a.start()
	owned := func(pid int) int {
		var k int
		if err := conn.QueryRow(context.Background(),
			"SELECT count(*) FROM jobdaemon.jobs WHERE state = 'running' AND lease_owner LIKE '%/' || $1 || '/%'", strconv.Itoa(pid)).Scan(&k); err != nil {
			t.Fatal(err)
		}
		return k
	}
	pollUntil(t, "the first daemon runs the 4 jobs", time.Minute, func() bool {
		return owned(da.Process.Pid) == 4 && len(runs(t, out)) == 4
	}, func() string { return tail(da.out.String()) })
	db := b.start()
	b.ready(db)
	if err := da.stop(syscall.SIGKILL); err == nil {
		t.Fatal("the killed daemon succeeded")
	}
	killed := time.Now()
	pollUntil(t, "the jobs back on the second daemon", ttl+30*time.Second, func() bool {
		return pgStates(t, conn)["completed"] == 4
	}, func() string { return fmt.Sprintf("%v\n%s", pgStates(t, conn), tail(db.out.String())) })
	back := time.Since(killed)
	if back > ttl+10*time.Second {
		t.Errorf("the jobs took %v to complete elsewhere; the lease TTL is %v", back, ttl)
	}
	rows, err := conn.Query(context.Background(), "SELECT attempt, result->>'owner' FROM jobdaemon.jobs")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var attempt int
		var owner string
		if err := rows.Scan(&attempt, &owner); err != nil {
			t.Fatal(err)
		}
		if attempt != 2 || !strings.Contains(owner, "/"+strconv.Itoa(db.Process.Pid)+"/") {
			t.Errorf("job completed at attempt %d by %s; want attempt 2 by the second daemon (pid %d)", attempt, owner, db.Process.Pid)
		}
	}
	if err := db.stop(syscall.SIGTERM); err != nil {
		t.Errorf("second daemon after TERM: %v", err)
	}
	t.Logf("the killed daemon's jobs completed elsewhere %v after the kill (lease TTL %v)", back.Round(time.Millisecond), ttl)
}

// submit with no daemon enqueues straight into the database; with a
// daemon, through its control socket (here the only way: the DSN is in
// the daemon's environment, not submit's). The payload reaches the
// command's standard input, and JOB_ID is the row id that submit printed.
// --id is a unique key; an oversized payload is refused either way.
func TestPgSubmit(t *testing.T) {
	dsn := pgMigrated(t)
	e := newPgEnv(t, pgConf{db: `dsn_env = "JD_TEST_PG_DSN"`, source: `max_payload = "1KiB"`})
	dsnVar := "JD_TEST_PG_DSN=" + dsn
	submit := func(stdin string, vars []string, args ...string) (int, string) {
		t.Helper()
		c := e.cmd(append([]string{"submit"}, args...)...)
		c.Env = append(c.Env, vars...)
		c.Stdin = strings.NewReader(stdin)
		b, _ := c.CombinedOutput()
		return c.ProcessState.ExitCode(), strings.TrimSpace(string(b))
	}
	isID := regexp.MustCompile(`^[0-9]+$`)

	// No daemon, no DSN: the error says which variable is missing.
	if code, out := submit("x", nil, "-"); code != 78 || !strings.Contains(out, "JD_TEST_PG_DSN is not set") {
		t.Errorf("submit without the DSN: exit %d\n%s", code, out)
	}
	// No daemon: straight into the database.
	file := filepath.Join(e.dir, "job-file")
	os.WriteFile(file, []byte("from a file\n"), 0o644)
	code, direct := submit("", []string{dsnVar}, file)
	if code != 0 || !isID.MatchString(direct) {
		t.Fatalf("direct submit: exit %d, %q", code, direct)
	}
	_, keyed := submit("keyed\n", []string{dsnVar}, "--id", "once", "-")
	if _, again := submit("keyed again\n", []string{dsnVar}, "--id", "once", "-"); again != keyed || !isID.MatchString(keyed) {
		t.Errorf("--id twice: %q then %q; want the same id", keyed, again)
	}
	big := strings.Repeat("x", 2000)
	if code, out := submit(big, []string{dsnVar}, "-"); code != 1 || !strings.Contains(out, "too large") {
		t.Errorf("direct submit over max_payload: exit %d\n%s", code, out)
	}

	d := e.startWith(dsnVar)
	e.ready(d)
	payload := "through the socket\nsecond line\n"
	code, viaSocket := submit(payload, nil, "-")
	if code != 0 || !isID.MatchString(viaSocket) {
		t.Fatalf("submit through the daemon: exit %d, %q\n%s", code, viaSocket, tail(d.out.String()))
	}
	if code, out := submit(big, nil, "-"); code != 1 || !strings.Contains(out, "larger than the limit of 1024 bytes") {
		t.Errorf("submit over max_payload through the daemon: exit %d\n%s", code, out)
	}
	for id, want := range map[string]string{direct: "from a file\n", keyed: "keyed\n", viaSocket: payload} {
		p := filepath.Join(e.dir, "payload", id)
		e.waitFor("job "+id+" ran", d, func() bool { b, err := os.ReadFile(p); return err == nil && string(b) == want })
	}
	if got := pgStates(t, pgConnect(t, dsn)); got["completed"] != 3 || len(got) != 1 {
		t.Errorf("jobs by state: %v, want 3 completed", got)
	}
	if err := d.stop(syscall.SIGTERM); err != nil {
		t.Errorf("daemon after TERM: %v", err)
	}
}

// status and /metrics show the queue's counts from the database: waiting,
// running (on any daemon) and failed.
func TestPgStatusAndMetrics(t *testing.T) {
	dsn := pgMigrated(t)
	e := newPgEnv(t, pgConf{db: pgDSN(dsn), maxChildren: 2})
	conn := pgConnect(t, dsn)
	pgExec(t, conn, "SELECT jobdaemon.enqueue(convert_to('fail', 'UTF8'), max_attempts => 1) FROM generate_series(1, 3)")
	pgExec(t, conn, "SELECT jobdaemon.enqueue(convert_to('sleep-first 60', 'UTF8')) FROM generate_series(1, 5)")
	// Held by another daemon, as far as this one knows.
	pgExec(t, conn, `UPDATE jobdaemon.jobs SET state = 'running', attempt = 1, lease_owner = 'elsewhere',
		lease_until = now() + interval '1 hour' WHERE id = (SELECT max(id) FROM jobdaemon.jobs)`)
	d := e.start()
	e.ready(d)
	// 3 failed, 2 running here and 1 elsewhere, 2 waiting.
	want := map[string]int{"failed": 3, "running": 3, "available": 2}
	pollUntil(t, "the jobs settled", time.Minute, func() bool { return sameCounts(pgStates(t, conn), want) },
		func() string { return fmt.Sprintf("%v\n%s", pgStates(t, conn), tail(d.out.String())) })

	var st struct {
		statusReply
		SourceJobs map[string]int `json:"source_jobs"`
	}
	pollUntil(t, "status shows the counts", 10*time.Second, func() bool {
		code, out := e.run("status", "--json")
		st.SourceJobs = nil
		_ = json.Unmarshal([]byte(out), &st)
		return code == 0 && st.Queued == 2 && sameCounts(st.SourceJobs, map[string]int{"failed": 3, "running": 3, "available": 2, "scheduled": 0})
	}, func() string { _, out := e.run("status", "--json"); return out })
	if code, out := e.run("status"); code != 0 || !strings.Contains(out, "source: 2 available, 3 failed, 3 running, 0 scheduled") {
		t.Errorf("status: exit %d\n%s", code, out)
	}
	metrics := e.curl("http://localhost/metrics")
	for _, w := range []string{`jobdaemon_source_jobs{state="failed"} 3`, `jobdaemon_source_jobs{state="running"} 3`,
		`jobdaemon_source_jobs{state="available"} 2`, "jobdaemon_queue_depth 2"} {
		if !strings.Contains(metrics, w) {
			t.Errorf("/metrics lacks %q", w)
		}
	}
	if err := d.stop(syscall.SIGTERM); err != nil {
		t.Errorf("daemon after TERM: %v", err)
	}
}

// sameCounts reports whether got has exactly the counts of want (zeros may be
// absent from got).
func sameCounts(got, want map[string]int) bool {
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	for k, v := range got {
		if want[k] != v {
			return false
		}
	}
	return true
}

// A configuration mistake of the postgres source names the file and line
// and exits 78, whichever command reads it.
func TestPgConfigErrors(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open.dsn")
	os.WriteFile(open, []byte("host=/nowhere password=s3cret-Pw\n"), 0o644)
	os.Chmod(open, 0o644)
	for _, tc := range []struct {
		name, source, command, want string
	}{
		{"no dsn", "", `"{id}"`, `config.toml:4: source.type: "postgres" needs the database: set one of dsn, dsn_file or dsn_env`},
		{"two dsns", "dsn = \"host=/nowhere\"\ndsn_file = \"/etc/jd.dsn\"\n", `"{id}"`, "config.toml:7: source.postgres.dsn_file: dsn is set too"},
		{"{path}", "dsn = \"host=/nowhere\"\n", `"{path}"`, `config.toml:2: job.command: argument 1 {path} is not filled in with source.type = "postgres"`},
		{"open dsn_file", fmt.Sprintf("dsn_file = %q\n", open), `"{id}"`, "config.toml:6: source.postgres.dsn_file: \"" + open + "\" is open to other users (mode 0644)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := t.TempDir()
			cfg := filepath.Join(d, "config.toml")
			body := "[job]\ncommand = [\"/bin/true\", " + tc.command + "]\n[source]\ntype = \"postgres\"\n[source.postgres]\n" + tc.source +
				"[daemon]\npid_file = \"pid\"\n[control]\nsocket = \"control.sock\"\n"
			os.WriteFile(cfg, []byte(body), 0o644)
			for _, args := range [][]string{{"check-config"}, {"run"}, {"pg", "migrate"}, {"submit", "-"}} {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				c := exec.CommandContext(ctx, binary, append(args, "--config", cfg)...)
				c.Stdin = strings.NewReader("x")
				out, _ := c.CombinedOutput()
				if code := c.ProcessState.ExitCode(); code != 78 {
					t.Errorf("%v: exit %d, want 78\n%s", args, code, out)
				}
				if !strings.Contains(string(out), cfg[:len(cfg)-len("config.toml")]+tc.want) {
					t.Errorf("%v: output lacks %q:\n%s", args, tc.want, out)
				}
				if strings.Contains(string(out), "s3cret") {
					t.Errorf("%v: the password shows:\n%s", args, out)
				}
			}
		})
	}
	// pg migrate is for a postgres source.
	e := newEnv(t, "")
	if code, out := e.run("pg", "migrate"); code != 78 || !strings.Contains(out, `"pg migrate" is for type = "postgres"`) {
		t.Errorf("pg migrate with a spool: exit %d\n%s", code, out)
	}
}

// The password of the DSN never shows: not in check-config, the logs,
// status, or the errors of a wrong password, which fail at once with the
// reason (pg migrate: exit 4).
func TestPgPasswordNeverShown(t *testing.T) {
	srv := pgtest.Shared(t)
	dsn := pgMigrated(t)
	ctx := context.Background()
	const right, wrong = "Right-pa55", "Wr0ng-pa55"
	if err := srv.Exec(ctx, "postgres", "CREATE ROLE jd_pw LOGIN SUPERUSER PASSWORD '"+right+"'"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.SetHBA(); err != nil {
			t.Error(err)
		}
		_ = srv.Exec(ctx, "postgres", "DROP ROLE jd_pw")
	})
	if err := srv.SetHBA("local all jd_pw scram-sha-256"); err != nil {
		t.Fatal(err)
	}
	withPw := func(pw string) string { return strings.Replace(dsn, "user=postgres", "user=jd_pw password="+pw, 1) }
	url := func(pw string) string {
		host := regexp.MustCompile(`host=(\S+)`).FindStringSubmatch(dsn)[1]
		port := regexp.MustCompile(`port=(\S+)`).FindStringSubmatch(dsn)[1]
		db := regexp.MustCompile(`dbname=(\S+)`).FindStringSubmatch(dsn)[1]
		return fmt.Sprintf("postgres://jd_pw:%s@/%s?host=%s&port=%s&sslmode=disable", pw, db, host, port)
	}
	secret := func(s string) bool { return strings.Contains(s, right) || strings.Contains(s, wrong) }

	for _, bad := range []string{withPw(wrong), url(wrong)} {
		e := newPgEnv(t, pgConf{db: pgDSN(bad), source: fmt.Sprintf("listen_dsn = %q", bad)})
		code, out := e.run("check-config")
		if code != 0 || secret(out) || !strings.Contains(out, "xxxxx") {
			t.Errorf("check-config: exit %d, want 0 and the password redacted\n%s", code, out)
		}
		start := time.Now()
		code, out = e.run("run")
		if code != 1 || secret(out) || !strings.Contains(out, "password authentication failed") {
			t.Errorf("run with a wrong password: exit %d, want 1 and the reason without the password\n%s", code, tail(out))
		}
		if took := time.Since(start); took > 30*time.Second {
			t.Errorf("a wrong password took %v to fail: retried?", took)
		}
		code, out = e.run("pg", "migrate")
		if code != 4 || secret(out) || !strings.Contains(out, "authentication refused") {
			t.Errorf("pg migrate with a wrong password: exit %d, want 4\n%s", code, out)
		}
	}

	// The right password, in a file for systemd's LoadCredential=.
	dsnFile := filepath.Join(t.TempDir(), "pg.dsn")
	os.WriteFile(dsnFile, []byte(url(right)+"\n"), 0o600)
	e := newPgEnv(t, pgConf{db: fmt.Sprintf("dsn_file = %q", dsnFile)})
	d := e.start()
	e.ready(d)
	c := e.cmd("submit", "-")
	c.Stdin = strings.NewReader("hello")
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("submit: %v\n%s", err, out)
	}
	e.waitFor("the job ran", d, func() bool { return len(runs(t, e.dir)) == 1 })
	_, status := e.run("status", "--json")
	_, text := e.run("status")
	_, checked := e.run("check-config")
	if err := d.stop(syscall.SIGTERM); err != nil {
		t.Errorf("daemon after TERM: %v", err)
	}
	if all := d.out.String() + status + text + checked; secret(all) {
		t.Errorf("the password shows in the log, status or check-config:\n%s", all)
	}
}

// A server that cannot be reached at start: the daemon logs where and
// why, retries, and is not ready (no READY=1 for systemd) until it
// connects; a TERM meanwhile stops it cleanly, exit 0.
func TestPgUnreachableAtStart(t *testing.T) {
	srv := pgtest.New(t, pgtest.Options{})
	dsn := srv.TestDB(t)
	if code, out := newPgEnv(t, pgConf{db: pgDSN(dsn)}).run("pg", "migrate"); code != 0 {
		t.Fatalf("pg migrate: exit %d\n%s", code, out)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(srv.SocketDir, ".s.PGSQL."+strconv.Itoa(srv.Port))
	unreachable := func(d *daemon) func() bool {
		return func() bool {
			out := d.out.String()
			return strings.Count(out, `"msg":"database unreachable; retrying"`) >= 2 &&
				strings.Contains(out, `"server":"socket `+socket) && strings.Contains(out, "no such file or directory")
		}
	}

	// Given up with a TERM.
	e := newPgEnv(t, pgConf{db: pgDSN(dsn)})
	n := newNotifySocket(t)
	d := e.startWith("NOTIFY_SOCKET=" + n.path)
	e.waitFor("unreachable, with the socket and the reason", d, unreachable(d))
	if i := n.find(0, "READY=1"); i >= 0 {
		t.Errorf("READY=1 while the database is unreachable: %q", n.all())
	}
	if err := d.stop(syscall.SIGTERM); err != nil {
		t.Errorf("TERM during start-up: %v\n%s", err, tail(d.out.String()))
	}
	if _, err := os.Stat(filepath.Join(e.dir, "jobdaemon.pid")); err == nil {
		t.Error("PID file left behind")
	}

	// Ready once the server is up.
	e = newPgEnv(t, pgConf{db: pgDSN(dsn)})
	n = newNotifySocket(t)
	d = e.startWith("NOTIFY_SOCKET=" + n.path)
	e.waitFor("unreachable", d, unreachable(d))
	if n.find(0, "READY=1") >= 0 {
		t.Errorf("READY=1 while the database is unreachable: %q", n.all())
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	e.waitFor("READY=1 once the server is up", d, func() bool { return n.find(0, "READY=1") >= 0 })
	if err := d.stop(syscall.SIGTERM); err != nil {
		t.Errorf("daemon after TERM: %v", err)
	}
}
