package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/jobdaemon/jobdaemon/pkg/service"
)

// demoConfig is filedemo.toml: the application's own configuration, which
// also gives the service the settings it needs.
type demoConfig struct {
	Dir          string        `toml:"dir"`
	Children     int           `toml:"children"`
	JobsPerChild int           `toml:"jobs_per_child"`
	Poll         time.Duration `toml:"poll"`
	PIDFile      string        `toml:"pid_file"`
	Socket       string        `toml:"socket"`
	User         string        `toml:"user"`
	LogFile      string        `toml:"log_file"`
}

// readConfig reads filedemo.toml; relative paths are relative to its
// directory.
func readConfig(path string) (demoConfig, error) {
	c := demoConfig{Dir: "var/filedemo", Children: 2, JobsPerChild: 1, Poll: time.Second}
	md, err := toml.DecodeFile(path, &c)
	if err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	if keys := md.Undecoded(); len(keys) > 0 {
		return c, fmt.Errorf("%s: unknown key %q", path, keys[0].String())
	}
	base, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return c, err
	}
	for _, p := range []*string{&c.Dir, &c.PIDFile, &c.Socket, &c.LogFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	return c, nil
}

// Configure gives the service its settings from filedemo.toml, at start,
// on every reload and for the client commands (status, stop...). The
// pool's size is not among them: LoadConfig sets it, as the PHP demo's
// loadConfig called setMaxChildren.
func (a *fileApp) Configure(ctx context.Context, s *service.Settings) error {
	c, err := readConfig(s.ConfigFile)
	if err != nil {
		return err
	}
	// The daemon checks what it will apply; a client command ("reload",
	// "status") only needs to find the daemon, even to reload a file that
	// the daemon is to refuse.
	if s.Command == "run" && c.Children < 1 {
		return fmt.Errorf("%s: children = %d: want 1 or more", s.ConfigFile, c.Children)
	}
	s.Daemon.PIDFile, s.Control.Socket, s.Daemon.User = c.PIDFile, c.Socket, c.User
	s.Daemon.IdleInterval = c.Poll
	s.Pool.JobsPerChild = c.JobsPerChild
	if c.LogFile != "" {
		s.Log.Target, s.Log.File = "file", c.LogFile
	}
	a.next = c
	return nil
}
