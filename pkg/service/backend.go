package service

import (
	"context"
	"fmt"
	"io"
	"os/user"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/jobdaemon/jobdaemon/internal/control"
	"github.com/jobdaemon/jobdaemon/pkg/jobs"
)

// backend is what the control socket controls: the daemon and the
// application around it.
type backend struct {
	d       *jobs.Daemon
	app     jobs.Source
	version string
	manager string
	user    string // the daemon's user, after any privilege drop

	mu       sync.Mutex
	warnings []string
}

func (b *backend) warn(msg string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.warnings = append(b.warnings, msg)
}

func (b *backend) Status() control.StatusReply {
	b.mu.Lock()
	warnings := append([]string(nil), b.warnings...)
	b.mu.Unlock()
	// Counted first: a source may count its depth in the same look.
	counts, _ := countJobs(b.app)
	st := b.d.Status()
	if w := failedStartsWarning(&st); w != "" {
		warnings = append(warnings, w)
	}
	return control.StatusReply{Status: st, Version: b.version, Manager: b.manager, User: b.user,
		Warnings: warnings, SourceJobs: counts}
}

// countTimeout bounds a JobCounter: a status or a scrape must not hang on
// the source.
const countTimeout = time.Second

// countJobs asks the application's JobCounter, if it has one, for its
// counts; nil, nil without one.
func countJobs(app jobs.Source) (map[string]int64, error) {
	jc, ok := app.(JobCounter)
	if !ok {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), countTimeout)
	defer cancel()
	return jc.CountJobs(ctx)
}

// failedStartsWarning describes workers that end before their first
// answer, or returns "" when the last worker did answer.
func failedStartsWarning(st *jobs.Status) string {
	if st.WorkerFailedStarts == 0 {
		return ""
	}
	return fmt.Sprintf("%d workers in a row ended before their first answer, the last: %s; the next starts in %s (a reload starts it at once)",
		st.WorkerFailedStarts, st.WorkerStartError, st.WorkerBackoff.Round(100*time.Millisecond))
}

// userName names the user the process runs as; it does not change once
// the privileges are dropped, so the lookup is made once.
func userName() string {
	uid := strconv.Itoa(syscall.Geteuid())
	if u, err := user.LookupId(uid); err == nil {
		return u.Username
	}
	return uid
}

func (b *backend) Reload(ctx context.Context) (int, error) {
	if err := b.d.Reload(ctx); err != nil {
		return 0, err
	}
	return b.d.Summary().Generation, nil
}

func (b *backend) Stop(mode jobs.StopMode)        { b.d.Stop(mode) }
func (b *backend) MaxChildren() int               { return b.d.MaxChildren() }
func (b *backend) SetMaxChildren(n int) int       { return b.d.SetMaxChildren(n) }
func (b *backend) ScaleMaxChildren(delta int) int { return b.d.ScaleMaxChildren(delta) }
func (b *backend) Pause()                         { b.d.Pause() }
func (b *backend) Resume()                        { b.d.Resume() }

func (b *backend) SignalJob(id string, sig syscall.Signal) error { return b.d.SignalJob(id, sig) }

// Submit hands a job to the application's Submitter, if it has one.
func (b *backend) Submit(ctx context.Context, id string, r io.Reader) (string, error) {
	s, ok := b.app.(Submitter)
	if !ok {
		return "", control.ErrNotSupported
	}
	return s.Submit(ctx, id, r)
}
