package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// reapCmd runs K jobs that block together on a FIFO (floors block) in K
// slots, releases them at once, and prints
//
//	children=K per_child_us=T cpu_us_per_child=C switches_per_child=S
//
// T is the time from the release to the K-th record filed in done/, over
// K: reaping, accounting and filing each job; C and S are the daemon's
// own CPU (its threads', not its children's; in 10 ms ticks) and context
// switches (all its threads') in that time, over K.
func reapCmd(args []string) error {
	fs := flag.NewFlagSet("reap", flag.ExitOnError)
	var s setup
	s.flags(fs)
	fs.StringVar(&s.cgroups, "cgroups", "", `[pool] cgroups ("" keeps the default)`)
	floors := fs.String("floors", "floors", "the floors program (its block is the job)")
	k := fs.Int("k", 100, "children")
	fs.Parse(args)
	if s.spool == "" || s.work == "" {
		return fmt.Errorf("-dir and -work are required")
	}
	gate, ready := filepath.Join(s.work, "gate"), filepath.Join(s.work, "ready")
	s.command = []string{*floors, "block", gate, ready}
	s.children, s.attempts = *k, 1
	cfg, err := s.prepare()
	if err != nil {
		return err
	}
	g, r, err := fifos(gate, ready)
	if err != nil {
		return err
	}
	defer syscall.Close(r)
	if err := queue(s.spool, "block", *k); err != nil {
		return err
	}
	d, err := s.start(cfg, nil, "run", "--drain")
	if err != nil {
		syscall.Close(g)
		return err
	}
	if err := readBytes(r, *k, 60*time.Second); err != nil {
		syscall.Close(g)
		d.stop()
		return err
	}
	w, err := watchRecords(filepath.Join(s.spool, "done"))
	if err != nil {
		syscall.Close(g)
		d.stop()
		return err
	}
	defer unix.Close(w)
	cpu0, err1 := selfCPU(d.pid())
	sw0, err2 := switches(d.pid())
	t0 := time.Now()
	syscall.Close(g) // end of file for every job at once
	if err := countRecords(w, *k, 60*time.Second); err != nil {
		d.stop()
		return err
	}
	el := time.Since(t0)
	cpu1, err3 := selfCPU(d.pid())
	sw1, err4 := switches(d.pid())
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		d.stop()
		return fmt.Errorf("the daemon's CPU or context switches: %w", err)
	}
	if err := d.exited(); err != nil {
		return err
	}
	if err := d.wait(); err != nil {
		return err
	}
	fmt.Printf("children=%d per_child_us=%.1f cpu_us_per_child=%.1f switches_per_child=%.2f\n", *k,
		float64(el.Nanoseconds())/1e3/float64(*k), float64((cpu1-cpu0).Nanoseconds())/1e3/float64(*k), float64(sw1-sw0)/float64(*k))
	return nil
}

// fifos makes the gate and ready FIFOs and opens both read-write, so that
// neither open waits for the other end.
func fifos(gate, ready string) (g, r int, err error) {
	for _, p := range []string{gate, ready} {
		os.Remove(p)
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			return -1, -1, err
		}
	}
	if g, err = syscall.Open(gate, syscall.O_RDWR|syscall.O_CLOEXEC, 0); err != nil {
		return -1, -1, err
	}
	if r, err = syscall.Open(ready, syscall.O_RDWR|syscall.O_CLOEXEC, 0); err != nil {
		syscall.Close(g)
		return -1, -1, err
	}
	return g, r, nil
}

// readBytes reads n bytes from fd, one per blocked job.
func readBytes(fd, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 4096)
	for got := 0; got < n; {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d jobs blocked after %s", got, n, timeout)
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, 100); err != nil && err != unix.EINTR {
			return err
		}
		if pfd[0].Revents&unix.POLLIN == 0 {
			continue
		}
		m, err := syscall.Read(fd, buf)
		if err != nil && err != syscall.EINTR {
			return err
		}
		got += max(m, 0)
	}
	return nil
}

// watchRecords returns an inotify descriptor on dir that reports the
// records renamed into it.
func watchRecords(dir string) (int, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		return -1, err
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_MOVED_TO|unix.IN_ONLYDIR); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// countRecords waits until n records have been renamed into the watched
// directory.
func countRecords(fd, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 256<<10)
	for got := 0; got < n; {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d records after %s", got, n, timeout)
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, 100); err != nil && err != unix.EINTR {
			return err
		}
		if pfd[0].Revents&unix.POLLIN == 0 {
			continue
		}
		m, err := unix.Read(fd, buf)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return err
		}
		for b := buf[:m]; len(b) >= unix.SizeofInotifyEvent; {
			size := int(binary.NativeEndian.Uint32(b[12:16]))
			end := min(unix.SizeofInotifyEvent+size, len(b))
			name := strings.TrimRight(string(b[unix.SizeofInotifyEvent:end]), "\x00")
			if strings.HasSuffix(name, ".result.json") {
				got++
			}
			b = b[end:]
		}
	}
	return nil
}

// termCmd starts the daemon with K jobs that sleep, waits until they all
// run, and prints
//
//	children=K ms=T
//
// T is the time from SIGTERM to the daemon's exit, by which it has reaped
// every child (each checked gone).
func termCmd(args []string) error {
	fs := flag.NewFlagSet("term", flag.ExitOnError)
	var s setup
	s.flags(fs)
	fs.StringVar(&s.cgroups, "cgroups", "", `[pool] cgroups ("" keeps the default)`)
	k := fs.Int("k", 8, "sleeping jobs")
	sig := fs.String("signal", "TERM", "TERM, or KILL (with -k 0: the time the kernel takes to end the daemon's process)")
	fs.Parse(args)
	if s.spool == "" || s.work == "" {
		return fmt.Errorf("-dir and -work are required")
	}
	want := syscall.SIGTERM
	switch {
	case *sig == "KILL" && *k == 0:
		want = syscall.SIGKILL
	case *sig != "TERM":
		return fmt.Errorf("-signal %s: TERM, or KILL with -k 0 (killed, the daemon leaves its children to Pdeathsig)", *sig)
	}
	s.command = []string{"/bin/sleep", "1000"}
	if *k > 0 {
		s.children = *k
	}
	cfg, err := s.prepare()
	if err != nil {
		return err
	}
	if err := queue(s.spool, "sleep", *k); err != nil {
		return err
	}
	d, err := s.start(cfg, nil, "run")
	if err != nil {
		return err
	}
	var kids []int
	if *k > 0 {
		kids, err = waitChildren(d.pid(), *k, "sleep", 10*time.Second)
	} else {
		err = waitFile(filepath.Join(s.work, "control.sock"), 10*time.Second)
	}
	if err != nil {
		d.stop()
		return err
	}
	el, err := d.timeSignal(want)
	if err != nil {
		return err
	}
	if err := d.wait(); err != nil && want != syscall.SIGKILL {
		return err
	}
	if err := outlived(kids, "the daemon"); err != nil {
		return err
	}
	fmt.Printf("children=%d ms=%.3f\n", *k, float64(el.Microseconds())/1e3)
	return nil
}

// superCmd starts a supervisor command that runs k "sleep" children
// (floors super, goloop super), and times SIGTERM to it → it has exited
// as termCmd times the daemon; it prints
//
//	children=K ms=M
func superCmd(args []string) error {
	fs := flag.NewFlagSet("super", flag.ExitOnError)
	k := fs.Int("k", 8, "the sleeping children the command starts")
	fs.Parse(args)
	if fs.NArg() == 0 {
		return fmt.Errorf("no command")
	}
	d := &daemon{cmd: exec.Command(fs.Arg(0), fs.Args()[1:]...)}
	if err := d.cmd.Start(); err != nil {
		return err
	}
	kids, err := waitChildren(d.pid(), *k, "sleep", 10*time.Second)
	if err != nil {
		d.cmd.Process.Kill()
		d.cmd.Wait()
		return err
	}
	el, err := d.timeSignal(syscall.SIGTERM)
	if err != nil {
		return err
	}
	if err := d.cmd.Wait(); err != nil {
		return fmt.Errorf("%s: %w", fs.Arg(0), err)
	}
	if err := outlived(kids, fs.Arg(0)); err != nil {
		return err
	}
	fmt.Printf("children=%d ms=%.3f\n", *k, float64(el.Microseconds())/1e3)
	return nil
}

// timeSignal lets the children settle into their sleep, as the C floor's
// are when they get the signal, sends sig to the process, and returns the
// time until it has exited (not yet reaped).
func (d *daemon) timeSignal(sig syscall.Signal) (time.Duration, error) {
	time.Sleep(100 * time.Millisecond)
	t0 := time.Now()
	if err := d.cmd.Process.Signal(sig); err != nil {
		return 0, err
	}
	if err := d.exited(); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}

// outlived returns an error if one of kids still runs sleep after who
// has exited.
func outlived(kids []int, who string) error {
	for _, pid := range kids {
		if syscall.Kill(pid, 0) == nil && comm(pid) == "sleep" {
			return fmt.Errorf("child %d outlived %s", pid, who)
		}
	}
	return nil
}

// exitCmd starts a command N times, lets it settle, SIGKILLs it and
// times the kernel's ending of it, to the reaping; it prints
//
//	runs=N p50_ms=M
func exitCmd(args []string) error {
	fs := flag.NewFlagSet("exit", flag.ExitOnError)
	n := fs.Int("n", 11, "runs")
	settle := fs.Duration("settle", 500*time.Millisecond, "how long the command runs before the kill")
	fs.Parse(args)
	if fs.NArg() == 0 {
		return fmt.Errorf("no command")
	}
	ms := make([]float64, 0, *n)
	for range *n {
		cmd := exec.Command(fs.Arg(0), fs.Args()[1:]...)
		if err := cmd.Start(); err != nil {
			return err
		}
		time.Sleep(*settle)
		t0 := time.Now()
		if err := cmd.Process.Kill(); err != nil {
			return err
		}
		_ = cmd.Wait() // killed: an error by definition
		ms = append(ms, float64(time.Since(t0).Microseconds())/1e3)
	}
	slices.Sort(ms)
	fmt.Printf("runs=%d p50_ms=%.3f\n", *n, ms[len(ms)/2])
	return nil
}

// execCmd runs a command that runs N jobs, and prints
//
//	jobs=N seconds=S rate=R/s
func execCmd(args []string) error {
	fs := flag.NewFlagSet("exec", flag.ExitOnError)
	n := fs.Int("n", 2000, "the jobs the command runs")
	fs.Parse(args)
	if fs.NArg() == 0 {
		return fmt.Errorf("no command")
	}
	cmd := exec.Command(fs.Arg(0), fs.Args()[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	t0 := time.Now()
	if err := cmd.Run(); err != nil {
		return err
	}
	secs := time.Since(t0).Seconds()
	fmt.Printf("jobs=%d seconds=%.3f rate=%.0f/s\n", *n, secs, float64(*n)/secs)
	return nil
}
