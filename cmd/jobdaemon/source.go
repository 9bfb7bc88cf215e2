package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"

	"github.com/jobdaemon/jobdaemon/internal/config"
	"github.com/jobdaemon/jobdaemon/pkg/jobs"
	"github.com/spf13/cobra"
)

// source is what the binary needs of a job source. Which source is in use
// is known here, in the factories below, and in the source's own package:
// nowhere else.
type source interface {
	jobs.Source
	jobs.Finisher
	jobs.Waker
	jobs.Depther
	jobs.OldestAger
	// Submit queues a job (the control socket, submit); errors wrapping
	// service.ErrBadJob are the client's to fix.
	Submit(ctx context.Context, id string, r io.Reader) (string, error)
	// Failed counts the jobs filed as failed since the start, refused
	// ones included.
	Failed() int
	Close() error
}

// sourceKind is what the binary does with one kind of source.
type sourceKind struct {
	// open opens the source for the daemon, after the privilege drop.
	open func(ctx context.Context, cfg *config.Config, log *slog.Logger) (source, error)
	// direct returns how "submit" queues jobs when no daemon runs: into
	// the source itself, by this process. It opens nothing until the
	// first job.
	direct func(cfg *config.Config) submitter
	// jobName is the name "submit" gives the job of file without --id.
	jobName func(file string) string
	// maxPayload is the largest job the source takes.
	maxPayload func(cfg *config.Config) int64
	// secrets reads what the source needs from files or the environment,
	// at start, before the privilege drop; nil when nothing.
	secrets func(cfg *config.Config) error
	// redact takes the secrets out of cfg, for check-config; nil when
	// none.
	redact func(cfg *config.Config)
	// commands are the source's own commands ("pg migrate"); nil when
	// none.
	commands func() []*cobra.Command
}

// sourceKinds are the sources this build has, by [source] type: THE place
// that knows which exist. A new source is its package, its table in
// internal/config, and one line here.
var sourceKinds = map[string]sourceKind{
	"spool":    spoolKind,
	"postgres": postgresKind,
}

// kindOf returns the kind of cfg's source; config.Load refuses a type
// this build does not have.
func kindOf(cfg *config.Config) (sourceKind, error) {
	k, ok := sourceKinds[cfg.Source.Type]
	if !ok {
		return sourceKind{}, fmt.Errorf("source type %q is not supported by this build", cfg.Source.Type)
	}
	return k, nil
}

// openSource opens the source that cfg's [source] table names.
func openSource(ctx context.Context, cfg *config.Config, log *slog.Logger) (source, error) {
	k, err := kindOf(cfg)
	if err != nil {
		return nil, err
	}
	return k.open(ctx, cfg, log)
}

// readSecrets reads what the source of cfg needs from files or the
// environment, at the daemon's start, before it drops its privileges: a
// DSN file that only root may read.
func readSecrets(cfg *config.Config) error {
	if k, err := kindOf(cfg); err != nil || k.secrets == nil {
		return err
	}
	return sourceKinds[cfg.Source.Type].secrets(cfg)
}

// submitter queues jobs for "submit".
type submitter interface {
	// SubmitAll queues the jobs, each named (spool) or keyed (postgres)
	// by its name, and returns their ids. Straight into the source it is
	// all or nothing; through a daemon, see socketSubmitter.
	SubmitAll(ctx context.Context, jobs []submission) ([]string, error)
	Close() error
}

// submission is one job of a submit.
type submission struct {
	name string
	data io.Reader
}

// directSubmit returns how "submit" queues jobs when no daemon runs.
func directSubmit(cfg *config.Config) (submitter, error) {
	k, err := kindOf(cfg)
	if err != nil {
		return nil, err
	}
	return k.direct(cfg), nil
}

// jobName is the name "submit" gives the job of file without --id.
func jobName(cfg *config.Config, file string) string {
	if k, err := kindOf(cfg); err == nil && file != "-" {
		return k.jobName(file)
	}
	return ""
}

// printable returns cfg as check-config prints it: without secrets.
func printable(cfg *config.Config) *config.Config {
	c := *cfg
	if k, err := kindOf(cfg); err == nil && k.redact != nil {
		k.redact(&c)
	}
	return &c
}

// maxPayload is the largest job the source of cfg takes; 0 when cfg is
// nil, and the control socket's default applies.
func maxPayload(cfg *config.Config) int64 {
	if cfg == nil {
		return 0
	}
	if k, err := kindOf(cfg); err == nil {
		return k.maxPayload(cfg)
	}
	return 0
}

// sourceCommands returns the commands of every source this build has.
func sourceCommands() []*cobra.Command {
	var cmds []*cobra.Command
	for _, name := range slices.Sorted(maps.Keys(sourceKinds)) {
		if k := sourceKinds[name]; k.commands != nil {
			cmds = append(cmds, k.commands()...)
		}
	}
	return cmds
}
