package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"syscall"
)

// ErrNoDaemon is returned by the Client when no daemon listens on the
// socket: the file is missing, or nobody accepts on it.
var ErrNoDaemon = errors.New("no daemon is running")

// ErrPermission is returned by the Client when the socket, or the daemon,
// refuses this user.
var ErrPermission = errors.New("permission denied")

// APIError is an error answer of the daemon.
type APIError struct {
	Status  int    // the HTTP status
	Message string // the daemon's explanation
}

func (e *APIError) Error() string { return e.Message }

// Is makes a 403 answer match ErrPermission.
func (e *APIError) Is(target error) bool {
	return target == ErrPermission && e.Status == http.StatusForbidden
}

// Client talks to a daemon's control socket.
type Client struct {
	path    string
	hc      *http.Client
	offline bool
}

// NewClient returns a client for the socket at path. It connects on each
// call.
func NewClient(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableKeepAlives: true,
	}
	return &Client{path: path, hc: &http.Client{Transport: tr}}
}

// Offline makes every later call fail with ErrNoDaemon without
// connecting: for a caller that knows no daemon runs (its PID file is not
// locked), and must not wake one through socket activation.
func (c *Client) Offline() { c.offline = true }

// Reach connects to the socket and hangs up, without a request: nil when
// a daemon listens there, an error wrapping ErrNoDaemon when none does (or
// the client is offline), ErrPermission when the socket refuses this
// user. For a caller that only needs to know where to send its own
// request: the daemon's answer to the request says the rest.
func (c *Client) Reach(ctx context.Context) error {
	if c.offline {
		return fmt.Errorf("%w (its PID file is not locked)", ErrNoDaemon)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.path)
	if err != nil {
		return c.connError(err)
	}
	return conn.Close()
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (*StatusReply, error) {
	var s StatusReply
	return &s, c.call(ctx, http.MethodGet, "/v1/status", nil, &s)
}

// Reload asks for a reload and waits for it; the error is the daemon's
// reason when the new configuration was refused.
func (c *Client) Reload(ctx context.Context) (*ReloadReply, error) {
	var r ReloadReply
	return &r, c.call(ctx, http.MethodPost, "/v1/reload", nil, &r)
}

// Stop asks the daemon to stop: mode is "drain", "graceful" or
// "immediate". It returns once the stop has begun.
func (c *Client) Stop(ctx context.Context, mode string) error {
	return c.call(ctx, http.MethodPost, "/v1/stop", StopRequest{Mode: mode}, nil)
}

// Scale sets the pool's size, or changes it by delta when relative; it
// returns the new size.
func (c *Client) Scale(ctx context.Context, n int, relative bool) (int, error) {
	req := ScaleRequest{MaxChildren: &n}
	if relative {
		req = ScaleRequest{Delta: &n}
	}
	var r ScaleReply
	err := c.call(ctx, http.MethodPost, "/v1/scale", req, &r)
	return r.MaxChildren, err
}

// Pause makes the daemon take no new job.
func (c *Client) Pause(ctx context.Context) error {
	return c.call(ctx, http.MethodPost, "/v1/pause", nil, nil)
}

// Resume makes a paused daemon take jobs again.
func (c *Client) Resume(ctx context.Context) error {
	return c.call(ctx, http.MethodPost, "/v1/resume", nil, nil)
}

// Signal sends sig ("SIGTERM", "HUP", "9"...) to the process group of
// the running job id.
func (c *Client) Signal(ctx context.Context, id, sig string) error {
	return c.call(ctx, http.MethodPost, "/v1/jobs/"+url.PathEscape(id)+"/signal", SignalRequest{Signal: sig}, nil)
}

// Submit queues a job with the payload read from r; id "" lets the daemon
// name it. It returns the job's id.
func (c *Client) Submit(ctx context.Context, id string, r io.Reader) (string, error) {
	var rep SubmitReply
	err := c.do(ctx, http.MethodPost, "/v1/jobs?id="+url.QueryEscape(id), "application/octet-stream", r, &rep)
	return rep.ID, err
}

func (c *Client) call(ctx context.Context, method, path string, req, rep any) error {
	var body io.Reader
	if req != nil {
		b, err := json.Marshal(req)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	return c.do(ctx, method, path, "application/json", body, rep)
}

func (c *Client) do(ctx context.Context, method, path, ctype string, body io.Reader, rep any) error {
	if c.offline {
		return fmt.Errorf("%w (its PID file is not locked)", ErrNoDaemon)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://jobdaemon"+path, body)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.connError(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("reading the daemon's answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		var e errorReply
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("%s: %s", resp.Status, bytes.TrimSpace(data))
		}
		return &APIError{Status: resp.StatusCode, Message: e.Error}
	}
	if rep != nil {
		if err := json.Unmarshal(data, rep); err != nil {
			return fmt.Errorf("the daemon's answer: %w", err)
		}
	}
	return nil
}

// connError says why the socket could not be reached.
func (c *Client) connError(err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w (no one listens on %s)", ErrNoDaemon, c.path)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%w: cannot connect to %s: run as root, as the daemon's user, or as a member of the socket's group", ErrPermission, c.path)
	}
	return fmt.Errorf("connect to %s: %w", c.path, err)
}
