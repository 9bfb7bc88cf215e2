package integration

// The fault suite: the daemon SIGKILLed at random moments while it runs
// thousands of jobs, with both sources, and, in faults_*_test.go, jobs
// that misbehave, resources that run out, signals in storms and jobs
// that attack the daemon. Every test runs real processes and real
// signals. The short versions run in CI; bench/faults.sh runs the long
// ones by setting the variables below:
//
//	JOBDAEMON_FAULT_JOBS   jobs of the kill tests (short: 300)
//	JOBDAEMON_FAULT_KILLS  SIGKILLs of the daemon in each (short: 4)
//	JOBDAEMON_FAULT_SEED   the random seed (default: the time; logged)
//
// What each proves is listed beside the guarantee in docs/GUARANTEES.md.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// faultScale returns the number of jobs and kills of a kill test, and
// its random source.
func faultScale(t *testing.T) (jobs, kills int, rng *rand.Rand) {
	t.Helper()
	jobs, kills = 300, 4
	if v, err := strconv.Atoi(os.Getenv("JOBDAEMON_FAULT_JOBS")); err == nil && v > 0 {
		jobs = v
	}
	if v, err := strconv.Atoi(os.Getenv("JOBDAEMON_FAULT_KILLS")); err == nil && v >= 0 {
		kills = v
	}
	seed := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("JOBDAEMON_FAULT_SEED"), 10, 64); err == nil {
		seed = v
	}
	t.Logf("%d jobs, %d kills, JOBDAEMON_FAULT_SEED=%d", jobs, kills, seed)
	return jobs, kills, rand.New(rand.NewPCG(seed, seed>>1))
}

// faultFigures is what a kill test reports, for the logs and
// bench/faults.sh.
type faultFigures struct {
	source                            string
	jobs, kills, inFlight, dups, lost int
	ended                             map[string]int // done, failed (completed, failed)
	took                              time.Duration
}

func (f faultFigures) log(t *testing.T) {
	t.Logf("FIGURES source=%s jobs=%d kills=%d in_flight_at_kills=%d duplicates=%d lost=%d ended=%v took=%v",
		f.source, f.jobs, f.kills, f.inFlight, f.dups, f.lost, f.ended, f.took.Round(time.Millisecond))
}

// killJobScript runs as each job of the kill tests: it notes its run in
// $RUNS ("ID ATTEMPT"), then does what its payload (standard input)
// says: "ok SECONDS" sleeps that long and succeeds, "fail" exits 3. Its
// child sleep, if any, carries $MARK in its environment, so that the
// test finds what is left running.
const killJobScript = `#!/bin/sh
read -r what arg || true
echo "$JOB_ID $JOB_ATTEMPT" >>"$RUNS"
case "$what" in
ok) [ -z "$arg" ] || sleep "$arg" ;;
fail) exit 3 ;;
*) echo "unknown payload $what" >&2; exit 64 ;;
esac
`

// killWorkerScript is killJobScript as a worker of the line protocol
// (docs/WORKER-PROTOCOL.md): each job line's payload says what to do, the
// run is noted in $RUNS, and the answer goes to descriptor 3. The worker
// itself carries $MARK, as the jobs' environment is its.
const killWorkerScript = `#!/usr/bin/env python3
import base64, json, os, sys, time
for line in sys.stdin:
    job = json.loads(line)
    words = base64.b64decode(job.get("payload") or "").decode().split()
    with open(os.environ["RUNS"], "a") as runs:
        runs.write("%s %d\n" % (job["id"], job["attempt"]))
    answer = {"id": job["id"], "ok": True}
    if words[:1] == ["ok"]:
        if len(words) > 1:
            time.sleep(float(words[1]))
    elif words[:1] == ["fail"]:
        answer = {"id": job["id"], "ok": False, "error": "failed on purpose"}
    else:
        answer = {"id": job["id"], "ok": False, "error": "unknown payload %r" % words}
    os.write(3, (json.dumps(answer) + "\n").encode())
`

// newKillEnv writes a configuration whose source is source's, and the
// job script, or in worker mode the worker script; jobs note their runs in
// the returned file.
func newKillEnv(t *testing.T, source, jobKeys string) (e *env, runs, mark string) {
	t.Helper()
	script := killJobScript
	if strings.Contains(jobKeys, `mode = "worker"`) {
		interpreter(t, "python3") // the worker's
		script = killWorkerScript
	}
	e, mark = newScriptEnv(t, t.TempDir(), script, `
[pool]
max_children = 8
job_timeout = "20s"
kill_grace = "500ms"
[job]
max_attempts = 3
backoff = "10ms"
`+jobKeys+source, "RUNS", "runs")
	return e, filepath.Join(e.dir, "runs"), mark
}

// newScriptEnv writes script as dir/job.sh and a configuration that runs
// it with {id} for each job, with the job's file (or payload) on standard
// input, a MARK variable that the test finds processes by, and the
// variables of vars (name, file name in dir). body adds tables: its
// [daemon] keys join the defaults' table, its [log] replaces the default
// one, its [job] gets command and env.
func newScriptEnv(t *testing.T, dir, script, body string, vars ...string) (e *env, mark string) {
	t.Helper()
	path := filepath.Join(dir, "job.sh")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	mark = fmt.Sprintf("JD_FAULT_MARK=%d", time.Now().UnixNano())
	k, v, _ := strings.Cut(mark, "=")
	jobEnv := fmt.Sprintf("%s = %q", k, v)
	for i := 0; i+1 < len(vars); i += 2 {
		jobEnv += fmt.Sprintf(", %s = %q", vars[i], filepath.Join(dir, vars[i+1]))
	}
	e = &env{t: t, dir: dir, config: filepath.Join(dir, "config.toml"), spool: filepath.Join(dir, "spool")}
	arg := "{id}"
	if strings.Contains(body, `mode = "worker"`) {
		arg = "{slot}" // a worker is no job's
	}
	jobTable := fmt.Sprintf("[job]\ncommand = [%q, %q]\nenv = { %s }\n", path, arg, jobEnv)
	if !strings.Contains(body, "[job]") {
		body += "\n" + jobTable
	} else {
		body = strings.Replace(body, "[job]\n", jobTable, 1)
	}
	if !strings.Contains(body, "[source") {
		body += "\n[source.spool]\ndir = \"spool\"\nrescan_interval = \"1s\"\n"
	}
	daemonKeys := ""
	if i := strings.Index(body, "[daemon]\n"); i >= 0 {
		// body's [daemon] keys join the table below.
		rest := body[i+len("[daemon]\n"):]
		end := strings.Index(rest, "\n[")
		if end < 0 {
			end = len(rest)
		}
		daemonKeys, body = rest[:end+1], body[:i]+rest[end+1:]
	}
	for _, kv := range []string{`pid_file = "jobdaemon.pid"`, `idle_interval = "100ms"`, `stop_timeout = "5s"`} {
		if k, _, _ := strings.Cut(kv, " "); !strings.Contains(daemonKeys, k+" =") {
			daemonKeys += kv + "\n"
		}
	}
	if !strings.Contains(body, "[log]") {
		body += "\n[log]\nformat = \"json\"\nlevel = \"info\"\njob_output = \"debug\"\n"
	}
	cfg := `
[daemon]
` + daemonKeys + `
[control]
socket = "control.sock"
` + body
	if err := os.WriteFile(e.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return e, mark
}

// payloads returns n job payloads: about one in ten fails, the others
// sleep up to 40 ms, so that jobs are in flight whenever the daemon dies.
func payloads(n int, rng *rand.Rand) []string {
	p := make([]string, n)
	for i := range p {
		if rng.IntN(10) == 0 {
			p[i] = "fail\n"
		} else {
			p[i] = fmt.Sprintf("ok 0.%03d\n", rng.IntN(40))
		}
	}
	return p
}

// readRuns counts the runs of each job in the runs file.
func readRuns(t *testing.T, path string) map[string]int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	runs := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if id, _, ok := strings.Cut(line, " "); ok {
			runs[id]++
		}
	}
	return runs
}

// killCycles runs the daemon and SIGKILLs it kills times, each at a
// random moment while it works, and returns, for each job, at how many
// kills it was in flight (inFlight says which jobs were, looked at with
// the daemon dead).
func killCycles(t *testing.T, e *env, kills int, rng *rand.Rand, progress func() int, inFlight func() []string) map[string]int {
	t.Helper()
	at := map[string]int{}
	for k := range kills {
		d := e.start()
		e.waitFor("ready", d, func() bool { return strings.Contains(d.out.String(), `"msg":"ready"`) })
		// A random moment: after 0 to 60 more jobs have ended, or 2 s.
		from, more := progress(), rng.IntN(60)
		deadline := time.Now().Add(2 * time.Second)
		for progress() < from+more && time.Now().Before(deadline) {
			time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
		}
		if err := d.stop(syscall.SIGKILL); err == nil {
			t.Fatalf("kill %d: the daemon had already exited:\n%s", k, tail(d.out.String()))
		}
		for _, id := range inFlight() {
			at[id]++
		}
	}
	return at
}

// checkRuns checks each job's runs against the kills it lived through:
// a job that succeeded ran once, plus once per kill it was in flight at;
// one that failed ran at most max_attempts times, plus as much. It
// returns the duplicates: the runs beyond the first of jobs that
// succeeded, all owed to kills.
func checkRuns(t *testing.T, runs map[string]int, ended map[string]string, at map[string]int) (dups int) {
	t.Helper()
	for id, where := range ended {
		n := runs[id]
		limit := 1
		if where == "failed" {
			limit = 3
		}
		if n < 1 || n > limit+at[id] {
			t.Errorf("job %s (%s) ran %d times; it was in flight at %d kills", id, where, n, at[id])
		}
		if where == "done" && n > 1 {
			dups += n - 1
		}
	}
	for id := range runs {
		if _, ok := ended[id]; !ok {
			t.Errorf("job %s ran, and did not end in done or failed", id)
		}
	}
	return dups
}

// nothingRuns fails the test if a process of the test's jobs is alive.
func nothingRuns(t *testing.T, mark string) {
	t.Helper()
	var left []int
	deadline := time.Now().Add(10 * time.Second)
	for {
		left = left[:0]
		for _, pid := range processesWithEnv(mark) {
			if processExists(pid) {
				left = append(left, pid)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Errorf("processes of the jobs left running: %v", left)
		for _, pid := range left {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// SIGKILL the daemon at random moments while it runs jobs from the
// spool: every job ends exactly once in done/ or failed/, none is lost,
// a job runs again only if it was in flight at a kill, and nothing is
// left running.
func TestFaultKillSpool(t *testing.T) {
	for _, mode := range faultModes {
		t.Run(mode.name, func(t *testing.T) { faultKillSpool(t, mode.jobKeys) })
	}
}

func faultKillSpool(t *testing.T, jobKeys string) {
	n, kills, rng := faultScale(t)
	start := time.Now()
	e, runsFile, mark := newKillEnv(t, "[source.spool]\ndir = \"spool\"\nrescan_interval = \"1s\"\n", jobKeys)
	t.Cleanup(func() { nothingRuns(t, mark) })
	want := map[string]string{}
	for i, p := range payloads(n, rng) {
		id := fmt.Sprintf("job-%05d", i)
		e.put(id, p)
		want[id] = "done"
		if strings.HasPrefix(p, "fail") {
			want[id] = "failed"
		}
	}
	progress := func() int { return e.count("done") + e.count("failed") }
	inFlight := func() []string {
		ents, _ := os.ReadDir(filepath.Join(e.spool, "running"))
		var ids []string
		for _, ent := range ents {
			if !strings.HasPrefix(ent.Name(), ".") {
				ids = append(ids, ent.Name())
			}
		}
		return ids
	}
	at := killCycles(t, e, kills, rng, progress, inFlight)
	if code, out := e.run("run", "--drain"); code != 0 && code != 1 {
		t.Fatalf("the last run: exit %d\n%s", code, tail(out))
	}

	ended := map[string]string{}
	for _, where := range []string{"done", "failed"} {
		ents, err := os.ReadDir(filepath.Join(e.spool, where))
		if err != nil {
			t.Fatal(err)
		}
		for _, ent := range ents {
			name := ent.Name()
			if strings.HasSuffix(name, ".result.json") {
				continue
			}
			if prev, dup := ended[name]; dup || strings.Contains(name, "~") {
				t.Errorf("job %s filed twice (in %s and %s)", name, prev, where)
			}
			ended[name] = where
		}
	}
	lost := 0
	for id, w := range want {
		switch got := ended[id]; {
		case got == "":
			lost++
			t.Errorf("job %s is lost", id)
		case got != w:
			t.Errorf("job %s ended in %s, want %s", id, got, w)
		}
	}
	if len(ended) != n {
		t.Errorf("%d files in done/ and failed/, want %d", len(ended), n)
	}
	for _, sub := range []string{"incoming", "running"} {
		if c := e.count(sub); c != 0 {
			t.Errorf("%d files left in %s/", c, sub)
		}
	}
	dups := checkRuns(t, readRuns(t, runsFile), ended, at)
	nothingRuns(t, mark)
	f := faultFigures{source: "spool", jobs: n, kills: kills, dups: dups, lost: lost, took: time.Since(start),
		ended: map[string]int{"done": e.count("done"), "failed": e.count("failed")}}
	for _, c := range at {
		f.inFlight += c
	}
	f.log(t)
}

// The same with the PostgreSQL source: every row ends completed or
// failed, and a job runs again only if its lease was the killed
// daemon's when it died.
func TestFaultKillPostgres(t *testing.T) {
	for _, mode := range faultModes {
		t.Run(mode.name, func(t *testing.T) { faultKillPostgres(t, mode.jobKeys) })
	}
}

func faultKillPostgres(t *testing.T, jobKeys string) {
	n, kills, rng := faultScale(t)
	start := time.Now()
	dsn := pgMigrated(t)
	e, runsFile, mark := newKillEnv(t, fmt.Sprintf("[source]\ntype = \"postgres\"\n[source.postgres]\ndsn = %q\nlease_ttl = \"1s\"\npoll_interval = \"200ms\"\n", dsn), jobKeys)
	t.Cleanup(func() { nothingRuns(t, mark) })
	conn := pgConnect(t, dsn)
	ps := payloads(n, rng)
	pgExec(t, conn, "SELECT jobdaemon.enqueue(convert_to(p, 'UTF8')) FROM unnest($1::text[]) AS p", ps)
	want := map[string]string{}
	rows, err := conn.Query(context.Background(), "SELECT id, convert_from(payload, 'UTF8') FROM jobdaemon.jobs")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		var p string
		if err := rows.Scan(&id, &p); err != nil {
			t.Fatal(err)
		}
		want[strconv.FormatInt(id, 10)] = map[bool]string{true: "failed", false: "completed"}[strings.HasPrefix(p, "fail")]
	}
	if len(want) != n {
		t.Fatalf("%d rows, want %d", len(want), n)
	}
	ended := func() map[string]int {
		st := pgStates(t, conn)
		return map[string]int{"completed": st["completed"], "failed": st["failed"]}
	}
	progress := func() int { m := ended(); return m["completed"] + m["failed"] }
	inFlight := func() []string {
		rows, err := conn.Query(context.Background(), "SELECT id FROM jobdaemon.jobs WHERE state = 'running'")
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, strconv.FormatInt(id, 10))
		}
		return ids
	}
	at := killCycles(t, e, kills, rng, progress, inFlight)
	// The last daemon runs until every row has ended: the killed
	// daemons' leases expire within lease_ttl, and their jobs come back.
	d := e.start()
	pollUntil(t, "every job ended", 5*time.Minute, func() bool { return progress() == n },
		func() string { return fmt.Sprintf("%v\n%s", pgStates(t, conn), tail(d.out.String())) })
	if err := d.stop(syscall.SIGTERM); err != nil {
		t.Errorf("the last daemon after TERM: %v\n%s", err, tail(d.out.String()))
	}

	got := map[string]string{}
	rows, err = conn.Query(context.Background(), "SELECT id, state FROM jobdaemon.jobs")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		var state string
		if err := rows.Scan(&id, &state); err != nil {
			t.Fatal(err)
		}
		got[strconv.FormatInt(id, 10)] = state
	}
	lost := 0
	endedAs := map[string]string{}
	for id, w := range want {
		if got[id] != w {
			lost++
			t.Errorf("job %s is %q, want %s", id, got[id], w)
		}
		endedAs[id] = map[string]string{"completed": "done", "failed": "failed"}[got[id]]
	}
	dups := checkRuns(t, readRuns(t, runsFile), endedAs, at)
	nothingRuns(t, mark)
	f := faultFigures{source: "postgres", jobs: n, kills: kills, dups: dups, lost: lost, ended: ended(), took: time.Since(start)}
	for _, c := range at {
		f.inFlight += c
	}
	f.log(t)
}

// faultModes are the ways the binary runs jobs that the kill tests run
// in, each with its [job] keys: a process per job, and workers of the line
// protocol (killWorkerScript), which die with the daemon and take their
// job with them; the same accounting holds for both.
var faultModes = []struct{ name, jobKeys string }{
	{"process", ""},
	{"worker", "mode = \"worker\"\n"},
}

// faultBinaryNoCgo builds, once, the binary without cgo (as the Debian
// package is): only it can keep capabilities through the privilege drop
// of a daemon started as root whose jobs run as another user.
var faultBinaryNoCgo = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "jobdaemon-nocgo-")
	if err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "jobdaemon")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/jobdaemon")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%v\n%s", err, out)
	}
	return bin, nil
})
