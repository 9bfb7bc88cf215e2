package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"syscall"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
	"github.com/jobdaemon/jobdaemon/pkg/lifecycle"
)

// StatusReply is the answer to GET /v1/status: the daemon's jobs.Status
// and what the program around it adds.
type StatusReply struct {
	jobs.Status
	Version string `json:"version,omitempty"`
	// Manager is how the daemon was started: "systemd", "classic" or
	// "foreground".
	Manager string `json:"manager,omitempty"`
	// User is the user the daemon runs as.
	User string `json:"user,omitempty"`
	// Warnings are conditions an operator should fix, such as jobs
	// running as root.
	Warnings []string `json:"warnings,omitempty"`
	// SourceJobs are the jobs of the source by state ("available",
	// "running", "failed"...), when the source can count them: for a
	// queue that several daemons share, all of theirs.
	SourceJobs map[string]int64 `json:"source_jobs,omitempty"`
}

// ReloadReply is the answer to a reload that succeeded.
type ReloadReply struct {
	Generation int `json:"config_generation"`
}

// StopRequest is the body of POST /v1/stop.
type StopRequest struct {
	// Mode is "drain", "graceful" (the default) or "immediate".
	Mode string `json:"mode"`
}

// ScaleRequest is the body of POST /v1/scale: either MaxChildren, or
// Delta, not both.
type ScaleRequest struct {
	MaxChildren *int `json:"max_children,omitempty"`
	Delta       *int `json:"delta,omitempty"`
}

// ScaleReply is the answer to a scale, pause or resume.
type ScaleReply struct {
	MaxChildren int        `json:"max_children"`
	State       jobs.State `json:"state,omitempty"`
}

// SignalRequest is the body of POST /v1/jobs/{id}/signal.
type SignalRequest struct {
	// Signal is a name ("SIGTERM" or "TERM") or a number; default SIGTERM.
	Signal string `json:"signal"`
}

// SubmitReply is the answer to POST /v1/jobs.
type SubmitReply struct {
	ID string `json:"id"`
}

// errorReply is the body of every error answer.
type errorReply struct {
	Error string `json:"error"`
}

// maxRequest is the largest JSON request body: every request is a few
// small fields.
const maxRequest = 64 << 10

// decode reads one JSON object from r into v, refusing unknown fields,
// trailing data and bodies larger than maxRequest. An empty body leaves v
// as it is: every request has defaults. Its errors are meant for the
// client: they say what was wrong with the body.
func decode(r io.Reader, v any) error {
	body, err := io.ReadAll(io.LimitReader(r, maxRequest+1))
	if err != nil {
		return fmt.Errorf("reading the request body: %w", err)
	}
	if len(body) > maxRequest {
		return fmt.Errorf("request body larger than %d bytes", maxRequest)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return fmt.Errorf("malformed JSON at byte %d: %v", se.Offset, err)
		case errors.As(err, &te):
			return fmt.Errorf("field %q: want %s, not %s", te.Field, te.Type, te.Value)
		case errors.Is(err, io.ErrUnexpectedEOF):
			return errors.New("malformed JSON: the body ends in the middle of a value")
		}
		return fmt.Errorf("bad request body: %v", err)
	}
	if dec.More() {
		return errors.New("bad request body: more than one JSON value")
	}
	return nil
}

// stopMode parses StopRequest.Mode.
func stopMode(s string) (jobs.StopMode, error) {
	switch s {
	case "drain":
		return jobs.Drain, nil
	case "", "graceful":
		return jobs.Graceful, nil
	case "immediate":
		return jobs.Immediate, nil
	}
	return 0, fmt.Errorf("unknown stop mode %q: use \"drain\", \"graceful\" or \"immediate\"", s)
}

// ParseSignal parses a signal name ("SIGTERM", "TERM", "term") or
// number, as lifecycle.ParseSignal does; "" is SIGTERM.
func ParseSignal(s string) (syscall.Signal, error) {
	if s == "" {
		return syscall.SIGTERM, nil
	}
	return lifecycle.ParseSignal(s)
}
