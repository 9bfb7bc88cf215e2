package pgqueue_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/jobdaemon/jobdaemon/internal/pgtest"
	"github.com/jobdaemon/jobdaemon/pkg/jobs"
	"github.com/jobdaemon/jobdaemon/pkg/jobs/pgqueue"
)

// section returns the fenced blocks of the given language in the part of
// docs/POSTGRES.md under the heading that starts with heading.
func section(t *testing.T, heading, lang string) []string {
	t.Helper()
	b, err := os.ReadFile("../../../docs/POSTGRES.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i := strings.Index(doc, "\n"+heading)
	if i < 0 {
		t.Fatalf("no heading %q in docs/POSTGRES.md", heading)
	}
	doc = doc[i+len(heading)+1:]
	if j := regexp.MustCompile(`\n#{1,3} `).FindStringIndex(doc); j != nil {
		doc = doc[:j[0]]
	}
	var blocks []string
	for _, m := range regexp.MustCompile("(?s)```"+lang+"\n(.*?)```").FindAllStringSubmatch(doc, -1) {
		blocks = append(blocks, m[1])
	}
	if len(blocks) == 0 {
		t.Fatalf("no %s block under %q", lang, heading)
	}
	return blocks
}

func psql(t *testing.T, dsn string, args ...string) *exec.Cmd {
	t.Helper()
	bin, err := pgtest.Binaries()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(bin, "psql"), append([]string{dsn, "-X", "-q", "-v", "ON_ERROR_STOP=1"}, args...)...)
	return cmd
}

// The SQL of docs/POSTGRES.md runs as written: the enqueueing examples,
// the shell one, and the queries for operators; the jobs it enqueues are
// what a daemon then gets.
func TestDocsSQL(t *testing.T) {
	dsn := migrated(t)
	c := connect(t, dsn)
	for _, sql := range section(t, "### From psql", "sql") {
		if out, err := psql(t, dsn, "-c", sql).CombinedOutput(); err != nil {
			t.Fatalf("%s\n%v\n%s", sql, err, out)
		}
	}
	sh := section(t, "### From psql", "sh")[0]
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "message.json"), []byte(`{"to": "o'brien@example"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	bin, _ := pgtest.Binaries()
	cmd := exec.Command("bash", "-c", sh)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "DSN="+dsn, "PATH="+bin+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		t.Fatalf("%s\n%v\n%s", sh, err, out)
	}
	if n := count(t, c, "SELECT count(*) FROM jobdaemon.jobs"); n != 4 {
		t.Errorf("%d jobs after the examples, want 4", n)
	}
	if n := count(t, c, `SELECT count(*) FROM jobdaemon.jobs
		WHERE queue = 'mail' AND convert_from(payload, 'UTF8') = '{"to": "o''brien@example"}'`); n != 1 {
		t.Error("the shell example did not enqueue the file as it is")
	}
	if n := count(t, c, "SELECT count(*) FROM jobdaemon.jobs WHERE unique_key = 'reminder-7' AND run_at > now() + interval '9 minutes' AND max_attempts = 5"); n != 1 {
		t.Error("the delayed job is not as described")
	}
	q, _ := openQueue(t, pgqueue.Options{DSN: dsn})
	j, err := q.NextJob(context.Background(), 0)
	if err != nil || j == nil || string(j.Payload) != `{"user": 42}` {
		t.Fatalf("first job: %+v, %v", j, err)
	}
	if err := q.Done(context.Background(), j, jobs.Result{ExitCode: 2}); err != nil {
		t.Fatal(err)
	}
	if err := q.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The operators' queries, the retry and cancel included, on ids that exist.
	if _, err := c.Exec(context.Background(), "UPDATE jobdaemon.jobs SET id = 42 WHERE id = $1::bigint", j.ID); err != nil {
		t.Fatal(err)
	}
	for _, sql := range section(t, "## The table", "sql") {
		if out, err := psql(t, dsn, "-c", sql).CombinedOutput(); err != nil {
			t.Fatalf("%s\n%v\n%s", sql, err, out)
		}
	}
}

// The least-privilege roles of docs/POSTGRES.md work: a producer that
// may only use the schema enqueues; a worker runs a queue.
func TestDocsRights(t *testing.T) {
	srv := pgtest.Shared(t)
	dsn := migrated(t)
	c := connect(t, dsn)
	ctx := context.Background()
	for _, sql := range []string{
		"CREATE ROLE producer LOGIN", "CREATE ROLE jobdaemon_worker LOGIN",
	} {
		if err := srv.Exec(ctx, "postgres", sql); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if _, err := c.Exec(ctx, "DROP OWNED BY producer, jobdaemon_worker"); err != nil {
			t.Error(err)
		}
		if err := srv.Exec(ctx, "postgres", "DROP ROLE producer, jobdaemon_worker"); err != nil {
			t.Error(err)
		}
	})
	grants := section(t, "## Rights", "sql")[0]
	if _, err := c.Exec(ctx, grants+"; GRANT USAGE ON SCHEMA jobdaemon TO producer"); err != nil {
		t.Fatal(err)
	}
	producer := strings.Replace(dsn, "user=postgres", "user=producer", 1)
	if out, err := psql(t, producer, "-c", "SELECT jobdaemon.enqueue(convert_to('x', 'UTF8'))").CombinedOutput(); err != nil {
		t.Fatalf("producer: %v\n%s", err, out)
	}
	if out, err := psql(t, producer, "-c", "INSERT INTO jobdaemon.jobs (payload) VALUES ('y')").CombinedOutput(); err == nil {
		t.Errorf("producer inserts into the table directly:\n%s", out)
	}
	worker := strings.Replace(dsn, "user=postgres", "user=jobdaemon_worker", 1)
	q, _ := openQueue(t, pgqueue.Options{DSN: worker})
	if _, err := q.Submit(ctx, "", strings.NewReader("z")); err != nil {
		t.Fatal(err)
	}
	j, err := q.NextJob(ctx, 0)
	if err != nil || j == nil {
		t.Fatalf("worker NextJob: %v, %v", j, err)
	}
	if err := q.Done(ctx, j, jobs.Result{}); err != nil {
		t.Fatal(err)
	}
	if err := q.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Stats(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(t, c, "SELECT count(*) FROM jobdaemon.jobs WHERE state = 'completed'"); n != 1 {
		t.Errorf("%d completed by the worker role", n)
	}
}

// The PHP example of docs/POSTGRES.md enqueues, binary-safe, through
// PDO.
func TestDocsPHP(t *testing.T) {
	php, err := exec.LookPath("php")
	if err == nil {
		if out, _ := exec.Command(php, "-m").Output(); !strings.Contains(string(out), "pdo_pgsql") {
			err = exec.ErrNotFound
		}
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("php with pdo_pgsql is needed (apt-get install php-cli php-pgsql): %v", err)
		}
		t.Skipf("php with pdo_pgsql not installed: %v", err)
	}
	dsn := migrated(t)
	c := connect(t, dsn)
	code := section(t, "### From PHP", "php")[0]
	// The example's server is db.example; the test's, a socket.
	var host, db string
	for _, kv := range strings.Fields(dsn) {
		if v, ok := strings.CutPrefix(kv, "host="); ok {
			host = v
		}
		if v, ok := strings.CutPrefix(kv, "dbname="); ok {
			db = v
		}
	}
	code = strings.Replace(code, "'pgsql:host=db.example;dbname=jobs', 'producer'", "'pgsql:host="+host+";dbname="+db+"', 'postgres'", 1)
	// Twice: the second enqueue of the same unique key returns the first id.
	script := "<?php\n" + code + "echo $id, \"\\n\";\n" + code + "echo $id, \"\\n\";\n"
	out, err := exec.Command(php, "-r", strings.TrimPrefix(script, "<?php\n")).CombinedOutput()
	if err != nil {
		t.Fatalf("php: %v\n%s", err, out)
	}
	ids := strings.Fields(string(out))
	if len(ids) != 2 || ids[0] != ids[1] {
		t.Fatalf("php printed %q, want the same id twice", out)
	}
	var payload string
	if err := c.QueryRow(context.Background(), "SELECT convert_from(payload, 'UTF8') FROM jobdaemon.jobs WHERE id = $1::bigint AND queue = 'mail' AND unique_key = 'welcome-42'", ids[0]).Scan(&payload); err != nil {
		t.Fatal(err)
	}
	if payload != `{"user":42}` {
		t.Errorf("payload %q", payload)
	}
	// PARAM_LOB keeps every byte, NUL included.
	binary := strings.Replace(code, "json_encode(['user' => 42])", `"a\0b\xff"`, 1)
	binary = strings.Replace(binary, "'welcome-42'", "'binary'", 1)
	out, err = exec.Command(php, "-r", binary+"echo $id;").CombinedOutput()
	if err != nil {
		t.Fatalf("php: %v\n%s", err, out)
	}
	var raw []byte
	if err := c.QueryRow(context.Background(), "SELECT payload FROM jobdaemon.jobs WHERE id = $1::bigint", string(out)).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	if string(raw) != "a\x00b\xff" {
		t.Errorf("binary payload stored as %q", raw)
	}
}
