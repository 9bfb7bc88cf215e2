package pgtest

import (
	"context"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func query(t *testing.T, dsn, sql string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var s string
	if err := c.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// Each test gets a database of its own, on a server that listens on no
// TCP port.
func TestNewDB(t *testing.T) {
	a, b := NewDB(t), NewDB(t)
	if a == b {
		t.Fatalf("two tests share database %s", a)
	}
	if got := query(t, a, "SHOW listen_addresses"); got != "" {
		t.Errorf("listen_addresses = %q, want empty", got)
	}
	if !strings.Contains(query(t, a, "SELECT current_database()"), "_") {
		t.Errorf("unexpected database name")
	}
	if os.Geteuid() == 0 {
		if got := query(t, a, "SELECT current_setting('data_directory')"); got == "" {
			t.Error("no data directory")
		}
		fi, err := os.Stat(Shared(t).Dir)
		if err != nil {
			t.Fatal(err)
		}
		if uid := fi.Sys().(*syscall.Stat_t).Uid; uid == 0 {
			t.Errorf("server directory owned by root: postgres cannot run as root")
		}
	}
}

// A private server survives a restart with its data, and Close removes
// everything.
func TestRestart(t *testing.T) {
	s := New(t, Options{})
	dsn := s.TestDB(t)
	ctx := context.Background()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "CREATE TABLE x AS SELECT 42 AS v"); err != nil {
		t.Fatal(err)
	}
	old := s.Pid()
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if s.Pid() == old || s.Pid() == 0 {
		t.Fatalf("pid %d after restart, was %d", s.Pid(), old)
	}
	// The old session was ended by the restart.
	if err := c.Ping(ctx); err == nil {
		t.Error("session survived a restart")
	}
	c.Close(ctx)
	if got := query(t, dsn, "SELECT v::text FROM x"); got != "42" {
		t.Errorf("after restart: %q", got)
	}
	if err := s.Crash(); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if got := query(t, dsn, "SELECT v::text FROM x"); got != "42" {
		t.Errorf("after crash recovery: %q", got)
	}
	dir := s.Dir
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s left behind: %v", dir, err)
	}
}

// SetHBA makes password authentication testable.
func TestSetHBA(t *testing.T) {
	s := Shared(t)
	dsn := NewDB(t)
	ctx := context.Background()
	if err := s.Exec(ctx, "postgres", "CREATE ROLE pgtest_pw LOGIN PASSWORD 'right'"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.SetHBA()
		_ = s.Exec(ctx, "postgres", "DROP ROLE pgtest_pw")
	})
	if err := s.SetHBA("local all pgtest_pw scram-sha-256"); err != nil {
		t.Fatal(err)
	}
	wrong := strings.Replace(dsn, "user=postgres", "user=pgtest_pw password=wrong", 1)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := pgx.Connect(ctx, wrong)
		if err != nil {
			if !strings.Contains(err.Error(), "password authentication failed") {
				t.Fatalf("wrong password: %v", err)
			}
			break
		}
		c.Close(ctx)
		if time.Now().After(deadline) {
			t.Fatal("a wrong password is still accepted after the reload")
		}
		time.Sleep(20 * time.Millisecond)
	}
	right := strings.Replace(dsn, "user=postgres", "user=pgtest_pw password=right", 1)
	if got := query(t, right, "SELECT current_user"); got != "pgtest_pw" {
		t.Errorf("current_user %q", got)
	}
}
