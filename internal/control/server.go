package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
)

// Backend is what the control socket controls: a jobs.Daemon and the
// program around it.
type Backend interface {
	// Status describes the daemon.
	Status() StatusReply
	// Reload re-reads the configuration and returns when done, with the
	// reason it was refused if it was.
	Reload(ctx context.Context) (generation int, err error)
	// Stop begins a stop and returns at once.
	Stop(mode jobs.StopMode)
	// MaxChildren returns the pool's size; SetMaxChildren and
	// ScaleMaxChildren change it and return the new one.
	MaxChildren() int
	SetMaxChildren(n int) int
	ScaleMaxChildren(delta int) int
	// Pause and Resume stop and restart taking new jobs.
	Pause()
	Resume()
	// SignalJob signals a running job's process group; jobs.ErrNoSuchJob
	// when no job has that id.
	SignalJob(id string, sig syscall.Signal) error
	// Submit queues a job, reading its payload from r (which fails past
	// the size limit); it returns the job's id. ErrNotSupported when the
	// source takes no submissions.
	Submit(ctx context.Context, id string, r io.Reader) (string, error)
}

// ErrNotSupported is returned by a Backend for what its source cannot do.
var ErrNotSupported = errors.New("not supported by this job source")

// ErrBadRequest marks a Backend error that is the client's fault, such as
// an invalid job id: it is answered with 400.
var ErrBadRequest = errors.New("bad request")

// ServerOptions configure a Server.
type ServerOptions struct {
	// Group, if not -1, is the group whose members may connect, besides
	// root and the daemon's user.
	Group int
	// Metrics serves GET /metrics; nil answers 404.
	Metrics http.Handler
	// MaxPayload bounds the body of POST /v1/jobs (default 64 MiB).
	MaxPayload int64
	// Logger gets a line for each refused connection and each request that
	// changes something.
	Logger *slog.Logger
}

// Server serves the control API on a listener.
type Server struct {
	b      Backend
	opts   ServerOptions
	ownUID int
	log    *slog.Logger
	http   *http.Server
}

// NewServer returns a server for b.
func NewServer(b Backend, opts ServerOptions) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxPayload <= 0 {
		opts.MaxPayload = 64 << 20
	}
	s := &Server{b: b, opts: opts, ownUID: os.Geteuid(), log: opts.Logger}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", s.status)
	mux.HandleFunc("POST /v1/reload", s.reload)
	mux.HandleFunc("POST /v1/stop", s.stop)
	mux.HandleFunc("POST /v1/scale", s.scale)
	mux.HandleFunc("POST /v1/pause", s.pause)
	mux.HandleFunc("POST /v1/resume", s.resume)
	mux.HandleFunc("POST /v1/jobs", s.submit)
	mux.HandleFunc("POST /v1/jobs/{id}/signal", s.signal)
	if opts.Metrics != nil {
		mux.Handle("GET /metrics", opts.Metrics)
	}
	// Every answer is JSON, even to a request for no known path (such
	// as a job ID holding a slash), so that clients parse one format.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fail(w, http.StatusNotFound, fmt.Errorf("no such request: %s %s", r.Method, r.URL.Path))
	})
	s.http = &http.Server{
		Handler: s.authorize(mux),
		// Slow or stuck clients must not pile up: headers come at once,
		// and even a large job payload is read within a minute. Answers
		// have no deadline, since a reload may take a while.
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       time.Minute,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			p, err := readPeer(c)
			if err != nil {
				s.log.Warn("control: cannot read the peer's credentials", "err", err)
				return ctx
			}
			return context.WithValue(ctx, peerKey{}, p)
		},
	}
	return s
}

// Serve accepts connections on l until Shutdown; it returns nil then.
func (s *Server) Serve(l net.Listener) error {
	err := s.http.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting connections and waits, until ctx ends, for the
// requests being answered.
func (s *Server) Shutdown(ctx context.Context) error { return s.http.Shutdown(ctx) }

// authorize lets through only the peers allowed to use the socket.
func (s *Server) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := peerOf(r.Context())
		if !allowed(p, s.ownUID, s.opts.Group) {
			if p != nil {
				s.log.Warn("control: refused a client", "uid", p.Uid, "gid", p.Gid, "client_pid", p.Pid,
					"method", r.Method, "path", r.URL.Path)
			}
			reply(w, http.StatusForbidden, errorReply{Error: "permission denied: only root, the daemon's user and members of the control group may use this socket"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	reply(w, http.StatusOK, s.b.Status())
}

func (s *Server) reload(w http.ResponseWriter, r *http.Request) {
	s.logRequest(r)
	gen, err := s.b.Reload(r.Context())
	if errors.Is(err, jobs.ErrNotRunning) || errors.Is(err, jobs.ErrStopping) {
		fail(w, http.StatusServiceUnavailable, err)
		return
	}
	if err != nil {
		fail(w, http.StatusUnprocessableEntity, err)
		return
	}
	reply(w, http.StatusOK, ReloadReply{Generation: gen})
}

func (s *Server) stop(w http.ResponseWriter, r *http.Request) {
	var req StopRequest
	if err := decode(r.Body, &req); err != nil {
		fail(w, http.StatusBadRequest, err)
		return
	}
	mode, err := stopMode(req.Mode)
	if err != nil {
		fail(w, http.StatusBadRequest, err)
		return
	}
	s.logRequest(r, "mode", mode.String())
	s.b.Stop(mode)
	reply(w, http.StatusAccepted, struct {
		Mode string `json:"mode"`
	}{mode.String()})
}

func (s *Server) scale(w http.ResponseWriter, r *http.Request) {
	var req ScaleRequest
	if err := decode(r.Body, &req); err != nil {
		fail(w, http.StatusBadRequest, err)
		return
	}
	var n int
	switch {
	case (req.MaxChildren == nil) == (req.Delta == nil):
		fail(w, http.StatusBadRequest, errors.New(`give either "max_children" or "delta"`))
		return
	case req.MaxChildren != nil:
		if *req.MaxChildren < 1 || *req.MaxChildren > 10000 {
			fail(w, http.StatusBadRequest, fmt.Errorf("max_children %d: want 1 to 10000", *req.MaxChildren))
			return
		}
		s.logRequest(r, "max_children", *req.MaxChildren)
		n = s.b.SetMaxChildren(*req.MaxChildren)
	default:
		if d := *req.Delta; d < -10000 || d > 10000 {
			fail(w, http.StatusBadRequest, fmt.Errorf("delta %d: want -10000 to 10000", d))
			return
		}
		s.logRequest(r, "delta", *req.Delta)
		n = s.b.ScaleMaxChildren(*req.Delta)
	}
	reply(w, http.StatusOK, ScaleReply{MaxChildren: n})
}

func (s *Server) pause(w http.ResponseWriter, r *http.Request) {
	s.logRequest(r)
	s.b.Pause()
	reply(w, http.StatusOK, ScaleReply{MaxChildren: s.b.MaxChildren(), State: jobs.StatePaused})
}

func (s *Server) resume(w http.ResponseWriter, r *http.Request) {
	s.logRequest(r)
	s.b.Resume()
	reply(w, http.StatusOK, ScaleReply{MaxChildren: s.b.MaxChildren(), State: jobs.StateRunning})
}

func (s *Server) submit(w http.ResponseWriter, r *http.Request) {
	body := http.MaxBytesReader(w, r.Body, s.opts.MaxPayload)
	id, err := s.b.Submit(r.Context(), r.URL.Query().Get("id"), body)
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		fail(w, http.StatusRequestEntityTooLarge, fmt.Errorf("job larger than the limit of %d bytes", tooLarge.Limit))
	case errors.Is(err, ErrNotSupported):
		fail(w, http.StatusNotImplemented, err)
	case errors.Is(err, ErrBadRequest):
		fail(w, http.StatusBadRequest, err)
	case err != nil:
		fail(w, http.StatusInternalServerError, err)
	default:
		s.logRequest(r, "job_id", id)
		reply(w, http.StatusCreated, SubmitReply{ID: id})
	}
}

func (s *Server) signal(w http.ResponseWriter, r *http.Request) {
	var req SignalRequest
	if err := decode(r.Body, &req); err != nil {
		fail(w, http.StatusBadRequest, err)
		return
	}
	sig, err := ParseSignal(req.Signal)
	if err != nil {
		fail(w, http.StatusBadRequest, err)
		return
	}
	id := r.PathValue("id")
	s.logRequest(r, "job_id", id, "signal", sig.String())
	switch err := s.b.SignalJob(id, sig); {
	case errors.Is(err, jobs.ErrNoSuchJob):
		fail(w, http.StatusNotFound, err)
	case err != nil:
		fail(w, http.StatusInternalServerError, err)
	default:
		reply(w, http.StatusOK, struct {
			ID     string `json:"id"`
			Signal string `json:"signal"`
		}{id, sig.String()})
	}
}

// logRequest logs a request that changes something, with who sent it.
func (s *Server) logRequest(r *http.Request, args ...any) {
	if p := peerOf(r.Context()); p != nil {
		args = append(args, "uid", p.Uid, "client_pid", p.Pid)
	}
	s.log.Info("control: "+r.URL.Path, args...)
}

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // a client that went away is no one's problem
}

func fail(w http.ResponseWriter, code int, err error) {
	reply(w, code, errorReply{Error: err.Error()})
}
