package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
)

// The test binary is also a client run under other credentials: with
// CONTROL_TEST_CLIENT set to a socket path, it asks for the status and
// exits 0 (allowed), 3 (refused with 403), 4 (cannot connect), or 1.
func TestMain(m *testing.M) {
	if path := os.Getenv("CONTROL_TEST_CLIENT"); path != "" {
		// Reach first, as submit does: the socket's mode refuses the
		// connection itself (4); the server's own check, the request (3).
		c := NewClient(path)
		err := c.Reach(context.Background())
		if err == nil {
			_, err = c.Status(context.Background())
		}
		var api *APIError
		switch {
		case err == nil:
			os.Exit(0)
		case errors.As(err, &api) && api.Status == http.StatusForbidden:
			os.Exit(3)
		case errors.Is(err, ErrPermission):
			os.Exit(4)
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// fakeBackend records what the server asked of it.
type fakeBackend struct {
	mu        sync.Mutex
	calls     []string
	max       int
	reloadErr error
	payloads  map[string]string
}

func (f *fakeBackend) record(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
}

func (f *fakeBackend) Status() StatusReply {
	f.mu.Lock()
	defer f.mu.Unlock()
	return StatusReply{Status: jobs.Status{State: jobs.StateRunning, Pid: 42, MaxChildren: f.max}, Version: "test"}
}

func (f *fakeBackend) Reload(ctx context.Context) (int, error) {
	f.record("reload")
	return 2, f.reloadErr
}

func (f *fakeBackend) Stop(mode jobs.StopMode) { f.record("stop " + mode.String()) }

func (f *fakeBackend) MaxChildren() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.max
}

func (f *fakeBackend) SetMaxChildren(n int) int {
	f.record("set " + strconv.Itoa(n))
	f.mu.Lock()
	defer f.mu.Unlock()
	f.max = n
	return n
}

func (f *fakeBackend) ScaleMaxChildren(d int) int {
	f.record("scale " + strconv.Itoa(d))
	f.mu.Lock()
	defer f.mu.Unlock()
	f.max = max(f.max+d, 1)
	return f.max
}

func (f *fakeBackend) Pause()  { f.record("pause") }
func (f *fakeBackend) Resume() { f.record("resume") }

func (f *fakeBackend) SignalJob(id string, sig syscall.Signal) error {
	if id != "job-1" {
		return fmt.Errorf("job %q: %w", id, jobs.ErrNoSuchJob)
	}
	f.record("signal " + id + " " + sig.String())
	return nil
}

func (f *fakeBackend) Submit(ctx context.Context, id string, r io.Reader) (string, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return "", err
	}
	if strings.Contains(id, "/") {
		return "", fmt.Errorf("job id %q: %w", id, ErrBadRequest)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.payloads[id] = string(b)
	return id, nil
}

func (f *fakeBackend) lastCall() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		return ""
	}
	return f.calls[len(f.calls)-1]
}

// serve starts a server on a fresh socket and returns its path.
func serve(t *testing.T, b Backend, opts ServerOptions) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "control-test-")
	if err != nil {
		t.Fatal(err)
	}
	// Reachable by the helper clients that run as nobody.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "control.sock")
	l, err := Listen(path, opts.Group)
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(b, opts)
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		s.Shutdown(context.Background())
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return path
}

func TestEndpoints(t *testing.T) {
	b := &fakeBackend{max: 4, payloads: map[string]string{}}
	path := serve(t, b, ServerOptions{Group: -1, MaxPayload: 10,
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "m 1\n") })})
	c := NewClient(path)
	ctx := t.Context()

	st, err := c.Status(ctx)
	if err != nil || st.State != jobs.StateRunning || st.Pid != 42 || st.Version != "test" {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	if r, err := c.Reload(ctx); err != nil || r.Generation != 2 {
		t.Errorf("Reload = %+v, %v", r, err)
	}
	b.reloadErr = errors.New("config.toml:3: bad value")
	var api *APIError
	if _, err := c.Reload(ctx); !errors.As(err, &api) || api.Status != 422 || api.Message != "config.toml:3: bad value" {
		t.Errorf("refused Reload = %v", err)
	}
	for _, mode := range []string{"drain", "graceful", "immediate"} {
		if err := c.Stop(ctx, mode); err != nil || b.lastCall() != "stop "+mode {
			t.Errorf("Stop(%s) = %v, backend got %q", mode, err, b.lastCall())
		}
	}
	if err := c.Stop(ctx, "fast"); !errors.As(err, &api) || api.Status != 400 || !strings.Contains(api.Message, `unknown stop mode "fast"`) {
		t.Errorf("Stop(fast) = %v", err)
	}
	if n, err := c.Scale(ctx, 8, false); err != nil || n != 8 {
		t.Errorf("Scale(8) = %d, %v", n, err)
	}
	if n, err := c.Scale(ctx, -3, true); err != nil || n != 5 || b.lastCall() != "scale -3" {
		t.Errorf("Scale(-3) = %d, %v", n, err)
	}
	if _, err := c.Scale(ctx, 0, false); !errors.As(err, &api) || api.Status != 400 {
		t.Errorf("Scale(0) = %v", err)
	}
	if err := c.Pause(ctx); err != nil || b.lastCall() != "pause" {
		t.Errorf("Pause = %v", err)
	}
	if err := c.Resume(ctx); err != nil || b.lastCall() != "resume" {
		t.Errorf("Resume = %v", err)
	}
	if err := c.Signal(ctx, "job-1", "USR1"); err != nil || b.lastCall() != "signal job-1 user defined signal 1" {
		t.Errorf("Signal = %v, backend got %q", err, b.lastCall())
	}
	if err := c.Signal(ctx, "job-2", "TERM"); !errors.As(err, &api) || api.Status != 404 {
		t.Errorf("Signal(unknown job) = %v", err)
	}
	if err := c.Signal(ctx, "job-1", "SIGNOPE"); !errors.As(err, &api) || api.Status != 400 {
		t.Errorf("Signal(bad signal) = %v", err)
	}
	if id, err := c.Submit(ctx, "a", strings.NewReader("0123456789")); err != nil || id != "a" || b.payloads["a"] != "0123456789" {
		t.Errorf("Submit = %q, %v (payloads %v)", id, err, b.payloads)
	}
	if _, err := c.Submit(ctx, "b", strings.NewReader("0123456789X")); !errors.As(err, &api) || api.Status != 413 {
		t.Errorf("Submit(too large) = %v", err)
	}
	if _, err := c.Submit(ctx, "../x", strings.NewReader("x")); !errors.As(err, &api) || api.Status != 400 {
		t.Errorf("Submit(bad id) = %v", err)
	}
	resp, err := c.hc.Get("http://x/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "m 1\n" {
		t.Errorf("metrics: %q", body)
	}
}

// Bad requests get 400 with a message, and the server goes on.
func TestMalformedRequests(t *testing.T) {
	b := &fakeBackend{max: 4}
	path := serve(t, b, ServerOptions{Group: -1})
	c := NewClient(path)
	for _, tc := range []struct{ path, body, want string }{
		{"/v1/stop", `{"mode":`, "malformed JSON"},
		{"/v1/stop", `{"mode": 3}`, `field "mode": want string`},
		{"/v1/stop", `{"mood": "drain"}`, `unknown field "mood"`},
		{"/v1/stop", `{} {}`, "more than one JSON value"},
		{"/v1/scale", `{}`, `either "max_children" or "delta"`},
		{"/v1/scale", `{"max_children": 2, "delta": 1}`, `either "max_children" or "delta"`},
		{"/v1/scale", `{"delta": 1e9}`, "delta"},
		{"/v1/scale", strings.Repeat(" ", maxRequest+1), "larger than"},
	} {
		err := c.do(t.Context(), http.MethodPost, tc.path, "application/json", strings.NewReader(tc.body), nil)
		var api *APIError
		if !errors.As(err, &api) || api.Status != 400 || !strings.Contains(api.Message, tc.want) {
			t.Errorf("POST %s %.40q = %v, want 400 with %q", tc.path, tc.body, err, tc.want)
		}
	}
	if len(b.calls) != 0 {
		t.Errorf("bad requests reached the backend: %v", b.calls)
	}
	if _, err := c.Status(t.Context()); err != nil {
		t.Errorf("server after bad requests: %v", err)
	}
}

// Only root, the daemon's user and members of the group get in: a client
// running as nobody gets 403 even through a socket anyone may connect to;
// with the group among its groups, or as its primary group, it gets in.
func TestPeerCredentials(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root to run clients as other users")
		}
		t.Skip("needs root to run clients as other users")
	}
	const group = 4242 // a gid no one has
	var logs strings.Builder
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	}), nil))
	path := serve(t, &fakeBackend{}, ServerOptions{Group: group, Logger: log})
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o660 || fi.Sys().(*syscall.Stat_t).Gid != group {
		t.Fatalf("socket mode %v, gid %d; want 0660 and %d", mode, fi.Sys().(*syscall.Stat_t).Gid, group)
	}
	exe := copyTestBinary(t)
	run := func(cred *syscall.Credential) int {
		cmd := exec.Command(exe)
		cmd.Env = []string{"CONTROL_TEST_CLIENT=" + path}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			if ee.ExitCode() == 1 {
				t.Logf("client output: %s", out)
			}
			return ee.ExitCode()
		} else if err != nil {
			t.Fatalf("client: %v", err)
		}
		return 0
	}
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	if code := run(nobody); code != 4 {
		t.Errorf("nobody through a 0660 socket: exit %d, want 4 (connect refused by the file's mode)", code)
	}
	// Open the file to everyone: the server's own check must hold.
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	if code := run(nobody); code != 3 {
		t.Errorf("nobody: exit %d, want 3 (403)", code)
	}
	if code := run(&syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{group}}); code != 0 {
		t.Errorf("nobody in the group: exit %d, want 0", code)
	}
	if code := run(&syscall.Credential{Uid: 65534, Gid: group}); code != 0 {
		t.Errorf("nobody with the group as primary group: exit %d, want 0", code)
	}
	if code := run(&syscall.Credential{Uid: 0, Gid: 0}); code != 0 {
		t.Errorf("root: exit %d, want 0", code)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logs.String(), "refused a client") || !strings.Contains(logs.String(), "uid=65534") {
		t.Errorf("no log line for the refused client:\n%s", logs.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// copyTestBinary copies the test binary where other users can run it (go
// test keeps it in a directory only its owner may enter).
func copyTestBinary(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "control-client-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	exe := filepath.Join(dir, "client")
	dst, err := os.OpenFile(exe, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return exe
}

// A socket left by a dead daemon is replaced; a live one is refused with
// its pid; a file that is not a socket is left alone.
func TestListenStaleAndLive(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.sock")

	// A dead daemon's socket: bound, never closed by its owner, nobody
	// accepting. Unlinking is disabled so that Close leaves the file.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	l2, err := Listen(path, -1)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer l2.Close()

	// l2 is live now: accept in the background so that dialling succeeds.
	go func() {
		for {
			c, err := l2.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	_, err = Listen(path, -1)
	var re *RunningError
	if !errors.As(err, &re) || re.Pid != os.Getpid() {
		t.Fatalf("Listen over a live socket = %v, want RunningError with pid %d", err, os.Getpid())
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("another jobdaemon is running (pid %d)", os.Getpid())) {
		t.Errorf("message: %v", err)
	}

	file := filepath.Join(dir, "plain")
	os.WriteFile(file, []byte("keep me"), 0o644)
	if _, err := Listen(file, -1); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a file = %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep me" {
		t.Errorf("the file was touched: %q", b)
	}
}

// The client tells a missing daemon from a refused connection, with a
// request (Status) or without (Reach).
func TestClientErrors(t *testing.T) {
	missing := NewClient(filepath.Join(t.TempDir(), "none.sock"))
	if _, err := missing.Status(t.Context()); !errors.Is(err, ErrNoDaemon) {
		t.Errorf("missing socket: %v, want ErrNoDaemon", err)
	}
	if err := missing.Reach(t.Context()); !errors.Is(err, ErrNoDaemon) {
		t.Errorf("Reach, missing socket: %v, want ErrNoDaemon", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	b := &fakeBackend{}
	path := serve(t, b, ServerOptions{Group: -1})
	live := NewClient(path)
	if err := live.Reach(ctx); err != nil {
		t.Errorf("Reach, live socket: %v", err)
	}
	if _, err := live.Status(ctx); err != nil {
		t.Errorf("live socket: %v", err)
	}
	live.Offline()
	if err := live.Reach(ctx); !errors.Is(err, ErrNoDaemon) {
		t.Errorf("Reach, offline: %v, want ErrNoDaemon", err)
	}
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]syscall.Signal{"": syscall.SIGTERM, "TERM": syscall.SIGTERM, "sigkill": syscall.SIGKILL,
		"SIGUSR1": syscall.SIGUSR1, "hup": syscall.SIGHUP, "9": syscall.SIGKILL} {
		if got, err := ParseSignal(in); err != nil || got != want {
			t.Errorf("ParseSignal(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"SIGFOO", "0", "65", "-1", "TERM "} {
		if _, err := ParseSignal(in); err == nil {
			t.Errorf("ParseSignal(%q) succeeded", in)
		}
	}
}

// BenchmarkStatus is one status request over the socket, connection
// included (the client does not keep connections alive).
func BenchmarkStatus(b *testing.B) {
	dir := b.TempDir()
	l, err := Listen(filepath.Join(dir, "c.sock"), -1)
	if err != nil {
		b.Fatal(err)
	}
	s := NewServer(&fakeBackend{max: 4}, ServerOptions{Group: -1})
	go s.Serve(l)
	defer s.Shutdown(context.Background())
	c := NewClient(filepath.Join(dir, "c.sock"))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Status(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
