package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os/user"
	"strconv"
	"sync"
	"syscall"

	"github.com/jobdaemon/jobdaemon/internal/control"
	"github.com/jobdaemon/jobdaemon/pkg/jobs"
	"github.com/jobdaemon/jobdaemon/pkg/jobs/spool"
)

// backend is what the control socket controls: the daemon and its spool.
type backend struct {
	d       *jobs.Daemon
	spool   *spool.Spool
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
	return control.StatusReply{Status: b.d.Status(), Version: version, Manager: b.manager, User: b.user, Warnings: warnings}
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
	return b.d.Status().Generation, nil
}

func (b *backend) Stop(mode jobs.StopMode)        { b.d.Stop(mode) }
func (b *backend) MaxChildren() int               { return b.d.MaxChildren() }
func (b *backend) SetMaxChildren(n int) int       { return b.d.SetMaxChildren(n) }
func (b *backend) ScaleMaxChildren(delta int) int { return b.d.ScaleMaxChildren(delta) }
func (b *backend) Pause()                         { b.d.Pause() }
func (b *backend) Resume()                        { b.d.Resume() }

func (b *backend) SignalJob(id string, sig syscall.Signal) error { return b.d.SignalJob(id, sig) }

// Submit queues a job in the spool. The spool refuses bad names and
// oversized payloads; both are the client's to fix.
func (b *backend) Submit(ctx context.Context, id string, r io.Reader) (string, error) {
	got, err := b.spool.Submit(id, r)
	switch {
	case errors.Is(err, spool.ErrBadName), errors.Is(err, spool.ErrTooLarge):
		return "", fmt.Errorf("%w: %v", control.ErrBadRequest, err)
	case errors.Is(err, fs.ErrExist):
		return "", fmt.Errorf("%w: a job named %q already waits in the spool", control.ErrBadRequest, id)
	}
	return got, err
}
