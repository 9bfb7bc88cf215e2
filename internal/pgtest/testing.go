package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The server shared by the tests of one package: started by the first
// test that asks, stopped by Main.
var shared struct {
	once sync.Once
	srv  *Server
	err  error
}

var dbSeq atomic.Int64

// Main runs the tests of a package and stops its shared server after
// them, returning the exit code for os.Exit:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	if shared.srv != nil {
		if err := shared.srv.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "pgtest: stopping the shared server:", err)
		}
	}
	return code
}

// unavailable skips the test when PostgreSQL is not installed, or fails
// it under CI=true, where the binaries must be there.
func unavailable(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, ErrNoBinaries) && os.Getenv("CI") != "true" {
		t.Skipf("PostgreSQL not installed (apt-get install postgresql): %v", err)
	}
	t.Fatalf("throwaway PostgreSQL server: %v", err)
}

// Shared returns the package's shared server, starting it on first use.
// When the test fails, the end of the server's log is added to its
// output. The server is stopped by Main; a package that shares a server
// must call Main from its TestMain.
func Shared(t testing.TB) *Server {
	t.Helper()
	shared.once.Do(func() { shared.srv, shared.err = Start(Options{}) })
	if shared.err != nil {
		unavailable(t, shared.err)
	}
	s := shared.srv
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("PostgreSQL server log (end):\n%s", s.Log())
		}
	})
	return s
}

// NewDB creates a database for the test on the shared server, and drops
// it when the test ends. It returns its DSN.
func NewDB(t testing.TB) string {
	t.Helper()
	return Shared(t).TestDB(t)
}

// TestDB creates a database for the test on s, and drops it when the
// test ends. It returns its DSN.
func (s *Server) TestDB(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d_%d", os.Getpid(), dbSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.CreateDB(ctx, name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if s.Pid() == 0 {
			return // stopped by the test: nothing to drop
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.DropDB(ctx, name); err != nil {
			t.Errorf("drop test database: %v", err)
		}
	})
	return s.DSN(name)
}

// New starts a server of the test's own, for a test that stops, crashes
// or restarts it, and closes it when the test ends.
func New(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := Start(opts)
	if err != nil {
		unavailable(t, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("PostgreSQL server log (end):\n%s", s.Log())
		}
		if err := s.Close(); err != nil {
			t.Errorf("stop PostgreSQL: %v", err)
		}
	})
	return s
}
