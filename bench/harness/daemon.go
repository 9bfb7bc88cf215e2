package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// setup is what a measure of the daemon needs: where the spool is, and
// the settings that differ from config.toml's defaults.
type setup struct {
	bin      string   // the jobdaemon binary
	spool    string   // the spool's root; emptied first
	work     string   // config, log, control socket, PID file
	command  []string // the job's command
	children int      // [pool] max_children; 0 keeps the default
	cgroups  string   // [pool] cgroups; "" keeps the default
	attempts int      // [job] max_attempts; 0 keeps the default
}

// flags adds the flags every measure takes: -bin, -dir and -work.
func (s *setup) flags(fs *flag.FlagSet) {
	fs.StringVar(&s.bin, "bin", "jobdaemon", "the jobdaemon binary")
	fs.StringVar(&s.spool, "dir", "", "the spool's root (emptied first)")
	fs.StringVar(&s.work, "work", "", "a directory for the config and the log")
}

// prepare empties the spool, creates incoming/ and the work directory,
// and writes the configuration; it returns the config file's path.
func (s *setup) prepare() (string, error) {
	if err := os.RemoveAll(s.spool); err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Join(s.spool, "incoming"), 0o750); err != nil {
		return "", err
	}
	if err := os.MkdirAll(s.work, 0o750); err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[daemon]\npid_file = %q\n", filepath.Join(s.work, "jobdaemon.pid"))
	b.WriteString("[pool]\n")
	if s.children > 0 {
		fmt.Fprintf(&b, "max_children = %d\n", s.children)
	}
	if s.cgroups != "" {
		fmt.Fprintf(&b, "cgroups = %q\n", s.cgroups)
	}
	b.WriteString("[job]\ncommand = [")
	for i, a := range s.command {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q", a)
	}
	b.WriteString("]\n")
	if s.attempts > 0 {
		fmt.Fprintf(&b, "max_attempts = %d\n", s.attempts)
	}
	fmt.Fprintf(&b, "[source.spool]\ndir = %q\n", s.spool)
	fmt.Fprintf(&b, "[control]\nsocket = %q\n", filepath.Join(s.work, "control.sock"))
	cfg := filepath.Join(s.work, "config.toml")
	return cfg, os.WriteFile(cfg, []byte(b.String()), 0o640)
}

// queue creates n empty job files in incoming/, named prefix-NNNNNN.
func queue(spool, prefix string, n int) error {
	for i := range n {
		f, err := os.Create(filepath.Join(spool, "incoming", fmt.Sprintf("%s-%06d", prefix, i)))
		if err != nil {
			return err
		}
		f.Close()
	}
	return nil
}

// daemon is a running jobdaemon.
type daemon struct {
	cmd *exec.Cmd
	log *os.File
}

// start starts the daemon with args ("run", "--drain"...), its log in the
// work directory, and env added to the environment.
func (s *setup) start(cfg string, env []string, args ...string) (*daemon, error) {
	log, err := os.Create(filepath.Join(s.work, "daemon.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(s.bin, append(args, "--config", cfg)...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, err
	}
	return &daemon{cmd: cmd, log: log}, nil
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

// exited waits until the daemon has exited, without reaping it: its
// /proc entry still holds the CPU time of all its threads.
func (d *daemon) exited() error {
	var si unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, d.pid(), &si, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return err
		}
	}
}

// wait reaps the daemon and reports an exit status other than 0, with
// the end of its log.
func (d *daemon) wait() error {
	err := d.cmd.Wait()
	d.log.Close()
	if err != nil {
		b, _ := os.ReadFile(d.log.Name())
		if len(b) > 2000 {
			b = b[len(b)-2000:]
		}
		return fmt.Errorf("daemon: %v; its log ends with:\n%s", err, b)
	}
	return nil
}

// stop sends SIGTERM and waits.
func (d *daemon) stop() error {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	return d.wait()
}

// clockTick is USER_HZ, the unit of /proc/PID/stat's times: 100 on
// every Linux architecture Go supports.
const clockTick = 100

// selfCPU returns the CPU time of pid's threads, without its children's,
// from /proc/PID/stat (utime and stime, fields 14 and 15).
func selfCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: split after it.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("no ) in /proc/PID/stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): utime is field 14, f[11].
	if len(f) < 13 {
		return 0, errors.New("short /proc/PID/stat")
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(u+s) * time.Second / clockTick, nil
}

// children returns the pids of pid's children, from the children files
// of its threads.
func children(pid int) []int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var pids []int
	for _, t := range tasks {
		b, _ := os.ReadFile(t)
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				pids = append(pids, n)
			}
		}
	}
	return pids
}

// comm returns the command name of pid, "" if it is gone.
func comm(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	return strings.TrimSpace(string(b))
}

// waitChildren waits until pid has k children that run name, and
// returns their pids.
func waitChildren(pid, k int, name string, timeout time.Duration) ([]int, error) {
	deadline := time.Now().Add(timeout)
	for {
		var got []int
		for _, c := range children(pid) {
			if comm(c) == name {
				got = append(got, c)
			}
		}
		if len(got) >= k {
			return got, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d of %d children run %s after %s", len(got), k, name, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitFile waits until path exists.
func waitFile(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s missing after %s", path, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// monotonic returns CLOCK_MONOTONIC in ns, the clock floors' stamp
// writes.
func monotonic() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}
