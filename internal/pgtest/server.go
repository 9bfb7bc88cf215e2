package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoBinaries is wrapped by the error of Start when no PostgreSQL
// server binaries were found.
var ErrNoBinaries = errors.New("no PostgreSQL server binaries (initdb, postgres) found")

// Options tune a server. The zero value is what tests want.
type Options struct {
	// Fsync, if true, keeps PostgreSQL's fsync and synchronous commit on,
	// as on a real server; by default both are off, which makes a test
	// server several times faster at commits.
	Fsync bool
	// Settings are more run-time parameters, passed as -c NAME=VALUE.
	Settings map[string]string
}

// Server is a running (or stopped) throwaway PostgreSQL server.
type Server struct {
	// Dir is the temporary directory that holds everything of the server;
	// Close removes it.
	Dir string
	// SocketDir is the directory of the server's Unix socket, the host of
	// its DSNs.
	SocketDir string
	// Port names the socket: SocketDir/.s.PGSQL.Port.
	Port int

	bin  string
	data string
	opts Options
	cred *syscall.Credential
	log  *tailBuffer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has been waited for
}

// Binaries returns the directory of the newest PostgreSQL server binaries
// installed the Debian way, /usr/lib/postgresql/VERSION/bin, or the
// directory of initdb on PATH. The environment variable PGTEST_BIN, if
// set, is used instead.
func Binaries() (string, error) {
	if d := os.Getenv("PGTEST_BIN"); d != "" {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err != nil {
			return "", fmt.Errorf("PGTEST_BIN=%s: %w", d, ErrNoBinaries)
		}
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	// Newest version first: compare the version directories as numbers.
	slices.SortFunc(dirs, func(a, b string) int { return version(b) - version(a) })
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		d := filepath.Dir(p)
		if isExec(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	return "", ErrNoBinaries
}

func version(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// Start creates a database cluster in a new temporary directory and
// starts a server on it. It returns once the server accepts connections,
// or an error that quotes the server's output. The error wraps
// ErrNoBinaries when PostgreSQL is not installed.
func Start(opts Options) (*Server, error) {
	bin, err := Binaries()
	if err != nil {
		return nil, err
	}
	// A socket path is limited to 107 bytes: keep the directory short
	// even when TMPDIR is not.
	base := os.TempDir()
	if fi, err := os.Stat(base); len(base) > 60 || err != nil || (os.Geteuid() == 0 && fi.Mode().Perm()&0o001 == 0) {
		base = "/tmp" // also when the user postgres could not reach into TMPDIR
	}
	dir, err := os.MkdirTemp(base, "pgtest-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	s := &Server{
		Dir:       dir,
		SocketDir: filepath.Join(dir, "sock"),
		Port:      5432,
		bin:       bin,
		data:      filepath.Join(dir, "data"),
		opts:      opts,
		log:       &tailBuffer{max: 256 << 10},
	}
	if err := s.setUp(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := s.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

// setUp hands the directory to the user postgres when running as root,
// and runs initdb.
func (s *Server) setUp() error {
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return fmt.Errorf("pgtest: running as root needs the user postgres: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(s.Dir, uid, gid); err != nil {
			return fmt.Errorf("pgtest: %w", err)
		}
	}
	if err := os.Mkdir(s.SocketDir, 0o700); err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	if s.cred != nil {
		if err := os.Chown(s.SocketDir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return fmt.Errorf("pgtest: %w", err)
		}
	}
	cmd := exec.Command(filepath.Join(s.bin, "initdb"), "-D", s.data, "-U", "postgres",
		"--auth=trust", "--no-sync", "-E", "UTF8", "--no-locale")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	cmd.Dir = s.Dir
	cmd.Env = s.env()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pgtest: initdb: %w\n%s", err, out)
	}
	return s.SetHBA()
}

func (s *Server) env() []string {
	env := []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "TZ=UTC"}
	if s.cred != nil {
		env = append(env, "HOME="+s.Dir)
	} else if h := os.Getenv("HOME"); h != "" {
		env = append(env, "HOME="+h)
	}
	return env
}

// Start starts the server again after Stop, on the same data and socket.
// It returns once the server accepts connections.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("pgtest: server already running")
	}
	// A stale pid file from a killed server would stop postgres; Start
	// follows a Stop that has waited for the old one to exit.
	settings := map[string]string{
		"listen_addresses":        "",
		"unix_socket_directories": s.SocketDir,
		"port":                    strconv.Itoa(s.Port),
		"max_connections":         "300",
		"shared_buffers":          "128MB",
		"log_min_messages":        "warning",
		"log_line_prefix":         "%m [%p] ",
	}
	if !s.opts.Fsync {
		settings["fsync"] = "off"
		settings["synchronous_commit"] = "off"
		settings["full_page_writes"] = "off"
	}
	for k, v := range s.opts.Settings {
		settings[k] = v
	}
	args := []string{"-D", s.data}
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		args = append(args, "-c", k+"="+settings[k])
	}
	cmd := exec.Command(filepath.Join(s.bin, "postgres"), args...)
	cmd.Dir = s.Dir
	cmd.Env = s.env()
	cmd.Stdout, cmd.Stderr = s.log, s.log
	// Its own process group keeps a terminal's ^C away from it; SIGQUIT
	// (immediate shutdown) if this process dies, so no server outlives a
	// test binary that crashed or timed out.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Setpgid: true, Pdeathsig: syscall.SIGQUIT}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgtest: start postgres: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done
	if err := s.waitReady(done); err != nil {
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		<-done
		s.cmd, s.done = nil, nil
		return err
	}
	return nil
}

// waitReady waits until postmaster.pid says "ready" and a connection
// works.
func (s *Server) waitReady(exited <-chan struct{}) error {
	deadline := time.Now().Add(60 * time.Second)
	pidFile := filepath.Join(s.data, "postmaster.pid")
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("pgtest: postgres exited at start:\n%s", s.Log())
		default:
		}
		if b, err := os.ReadFile(pidFile); err == nil {
			lines := strings.Split(string(b), "\n")
			if len(lines) > 7 && strings.TrimSpace(lines[7]) == "ready" {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				c, err := pgx.Connect(ctx, s.DSN("postgres"))
				cancel()
				if err == nil {
					c.Close(context.Background())
					return nil
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("pgtest: postgres not ready after 60 s:\n%s", s.Log())
}

// Stop shuts the server down (fast shutdown: open sessions are ended)
// and waits for it to exit. The data stays, for Start.
func (s *Server) Stop() error {
	return s.stop(syscall.SIGINT)
}

// Crash stops the server the hard way (immediate shutdown, SIGQUIT: no
// checkpoint, the next Start recovers from the WAL), as a crash of the
// database would.
func (s *Server) Crash() error {
	return s.stop(syscall.SIGQUIT)
}

func (s *Server) stop(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return nil
	}
	_ = s.cmd.Process.Signal(sig)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd, s.done = nil, nil
	return nil
}

// Restart stops the server and starts it again.
func (s *Server) Restart() error {
	if err := s.Stop(); err != nil {
		return err
	}
	return s.Start()
}

// Close stops the server and removes its directory.
func (s *Server) Close() error {
	err := s.Stop()
	if rerr := os.RemoveAll(s.Dir); err == nil {
		err = rerr
	}
	return err
}

// Pid returns the process id of the postmaster, or 0 when it is stopped.
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// DSN returns a connection string for database db as the superuser
// postgres, over the server's socket.
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=%s sslmode=disable", s.SocketDir, s.Port, db)
}

// Log returns the end of what the server wrote to stdout and stderr.
func (s *Server) Log() string { return s.log.String() }

// SetHBA writes pg_hba.conf as the given lines followed by
// "local all all trust", and makes a running server read it again. Lines
// such as "local all alice scram-sha-256" make password tests possible.
func (s *Server) SetHBA(lines ...string) error {
	text := strings.Join(append(lines, "local all all trust"), "\n") + "\n"
	p := filepath.Join(s.data, "pg_hba.conf")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	if s.cred != nil {
		if err := os.Chown(p, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return fmt.Errorf("pgtest: %w", err)
		}
	}
	if pid := s.Pid(); pid != 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return s.Exec(ctx, "postgres", "SELECT pg_reload_conf()")
	}
	return nil
}

// Exec runs sql in database db.
func (s *Server) Exec(ctx context.Context, db, sql string, args ...any) error {
	c, err := pgx.Connect(ctx, s.DSN(db))
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	defer c.Close(context.WithoutCancel(ctx))
	if _, err := c.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("pgtest: %s: %w", sql, err)
	}
	return nil
}

// CreateDB creates database name.
func (s *Server) CreateDB(ctx context.Context, name string) error {
	return s.Exec(ctx, "postgres", "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
}

// DropDB drops database name, ending its sessions first.
func (s *Server) DropDB(ctx context.Context, name string) error {
	return s.Exec(ctx, "postgres", "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if over := b.buf.Len() - b.max; over > 0 {
		b.buf.Next(over)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
