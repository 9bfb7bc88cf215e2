package config

import (
	"fmt"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A NUL byte in any string of the file is refused with its file:line and
// key, before anything else is looked at: no path, argument, user name or
// variable can hold one, and a command argument with one would make every
// job fail at its start.
func TestNULRefusedEverywhere(t *testing.T) {
	dir := t.TempDir()
	cmd := tool(t, dir)
	for _, tc := range []struct{ body, key string }{
		{fmt.Sprintf("[job]\ncommand = [%q, \"a\\u0000b\"]\n", cmd), "job.command"},
		{fmt.Sprintf("[job]\ncommand = [%q]\nenv = { A = \"x\\u0000\" }\n", cmd), "job.env.A"},
		{fmt.Sprintf("[job]\ncommand = [%q]\nenv = { \"A\\u0000B\" = \"x\" }\n", cmd), "job.env"},
		{fmt.Sprintf("[job]\ncommand = [%q]\ninherit_env = [\"HOME\\u0000\"]\n", cmd), "job.inherit_env"},
		{fmt.Sprintf("[job]\ncommand = [%q]\nuser = \"nobody\\u0000\"\n", cmd), "job.user"},
		{fmt.Sprintf("[job]\ncommand = [%q]\nworking_dir = \"/tmp\\u0000\"\n", cmd), "job.working_dir"},
		{fmt.Sprintf("[job]\ncommand = [%q]\n[daemon]\npid_file = \"/run/x\\u0000.pid\"\n", cmd), "daemon.pid_file"},
		{fmt.Sprintf("[job]\ncommand = [%q]\n[daemon]\nuser = \"root\\u0000\"\n", cmd), "daemon.user"},
		{fmt.Sprintf("[job]\ncommand = [%q]\n[control]\nsocket = \"/run/c\\u0000\"\n", cmd), "control.socket"},
		{fmt.Sprintf("[job]\ncommand = [%q]\n[log]\ntarget = \"file\"\nfile = \"/var/log/x\\u0000\"\n", cmd), "log.file"},
		{fmt.Sprintf("[job]\ncommand = [%q]\n[log]\njoblog = \"/var/log/j\\u0000\"\n", cmd), "log.joblog"},
		{fmt.Sprintf("[job]\ncommand = [%q]\n[source.spool]\ndir = \"/s\\u0000\"\n", cmd), "source.spool.dir"},
		{fmt.Sprintf("[job]\ncommand = [%q]\n[source]\ntype = \"postgres\"\n[source.postgres]\ndsn = \"host=x\\u0000\"\n", cmd), "source.postgres.dsn"},
		{fmt.Sprintf("[job]\ncommand = [\"%s\\u0000\"]\n", cmd), "job.command"},
	} {
		t.Run(tc.key, func(t *testing.T) {
			path := writeFile(t, dir, "config.toml", tc.body, 0o644)
			_, err := Load(path)
			errs := errorList(t, err)
			if len(errs) == 0 {
				t.Fatalf("accepted:\n%s", tc.body)
			}
			found := false
			for _, e := range errs {
				if e.Key == tc.key && strings.Contains(e.Msg, "NUL") {
					found = true
					if e.Line == 0 || e.File != path {
						t.Errorf("no file:line: %v", e)
					}
				}
			}
			if !found {
				t.Errorf("no NUL error for %s: %v", tc.key, err)
			}
			if strings.ContainsRune(err.Error(), 0) {
				t.Errorf("the message itself holds the NUL: %q", err)
			}
		})
	}
}

// A FIFO where the configuration or a DSN file belongs is refused at
// once: a plain open would wait for a writer for ever.
func TestFIFOIsRefusedAtOnce(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	withTimeout := func(what string, f func() error) error {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- f() }()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatalf("%s blocks on a FIFO", what)
			return nil
		}
	}
	err := withTimeout("Load", func() error { _, err := Load(fifo); return err })
	if err == nil || !strings.Contains(err.Error(), "not a regular file but a FIFO") {
		t.Errorf("Load(FIFO) = %v", err)
	}
	body := fmt.Sprintf("[job]\ncommand = [%q]\n[source]\ntype = \"postgres\"\n[source.postgres]\ndsn_file = %q\n", tool(t, dir), fifo)
	c, err := Load(writeFile(t, dir, "config.toml", body, 0o644))
	if err != nil {
		t.Fatal(err)
	}
	err = withTimeout("PostgresDSN", func() error { _, err := c.PostgresDSN(); return err })
	if err == nil || !strings.Contains(err.Error(), "FIFO") || !strings.Contains(err.Error(), "config.toml:6") {
		t.Errorf("PostgresDSN(FIFO) = %v", err)
	}
}

// [job] user and group are looked up like [daemon]'s; with a user of the
// jobs' own, {path} is refused (the job cannot open the spool), and
// {name} is not.
func TestJobUser(t *testing.T) {
	if _, err := user.Lookup("nobody"); err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	dir := t.TempDir()
	prog := tool(t, dir)
	for _, tc := range []struct{ job, want string }{
		{`user = "nobody"`, ""},
		{"user = \"nobody\"\ngroup = \"nogroup\"", ""},
		{`user = "no-such-user-xyz"`, `job.user: no user "no-such-user-xyz"`},
		{`group = "nogroup"`, "job.group \"nogroup\" is set without job.user"},
	} {
		body := fmt.Sprintf("[job]\ncommand = [%q, \"{name}\"]\n%s\n", prog, tc.job)
		_, err := Load(writeFile(t, dir, "config.toml", body, 0o644))
		checkErr(t, err, tc.want)
	}
	c, err := Load(writeFile(t, dir, "config.toml", fmt.Sprintf("[job]\ncommand = [%q]\nuser = \"nobody\"\n", prog), 0o644))
	if err != nil {
		t.Fatal(err)
	}
	st := c.Settings()
	cred, err := st.JobCredential()
	if err != nil || cred == nil || cred.Uid != 65534 {
		t.Errorf("JobCredential = %+v, %v", cred, err)
	}
	body := fmt.Sprintf("[job]\ncommand = [%q, \"{path}\"]\nuser = \"nobody\"\n", prog)
	_, err = Load(writeFile(t, dir, "config.toml", body, 0o644))
	checkErr(t, err, "config.toml:2: job.command: argument 1 {path}: jobs run as job.user \"nobody\", who cannot open the spool's files")
}
