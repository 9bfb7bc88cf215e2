package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// latencyCmd measures, with the daemon running idle with the default
// settings and a job that writes the time it started to a FIFO (floors
// stamp):
//
//	submit   jobdaemon submit FILE → the job's process runs
//	cp       cp FILE into incoming/ → the job's process runs
//	rename   rename(2) into incoming/ → the job's process runs: the
//	         daemon's own part
//	cli      jobdaemon version, start to exit: the CLI's start-up
//
// and prints the p50 and p99 of each in ms:
//
//	submit_p50_ms=... submit_p99_ms=... cp_p50_ms=... ... cli_p99_ms=...
func latencyCmd(args []string) error {
	fs := flag.NewFlagSet("latency", flag.ExitOnError)
	var s setup
	s.flags(fs)
	floors := fs.String("floors", "floors", "the floors program (its stamp is the job)")
	n := fs.Int("n", 200, "jobs of each kind")
	gap := fs.Duration("gap", 20*time.Millisecond, "pause between two jobs")
	fs.Parse(args)
	if s.spool == "" || s.work == "" {
		return fmt.Errorf("-dir and -work are required")
	}
	fifo := filepath.Join(s.work, "stamps")
	s.command = []string{*floors, "stamp", fifo}
	cfg, err := s.prepare()
	if err != nil {
		return err
	}
	os.Remove(fifo)
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		return err
	}
	// Read and write: open at once, and never at end of file.
	ff, err := os.OpenFile(fifo, os.O_RDWR|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer ff.Close()
	stamps := bufio.NewReader(ff)
	src := filepath.Join(s.work, "src")
	stage := filepath.Join(s.spool, "stage") // on the spool's file system
	for _, dir := range []string{src, stage} {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return err
		}
	}
	d, err := s.start(cfg, nil, "run")
	if err != nil {
		return err
	}
	defer d.stop()
	if err := waitFile(filepath.Join(s.work, "control.sock"), 10*time.Second); err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond)

	// started returns when the job started, by its stamp.
	started := func() (int64, error) {
		ff.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, err := stamps.ReadString('\n')
		if err != nil {
			return 0, fmt.Errorf("no stamp from the job: %w", err)
		}
		return strconv.ParseInt(strings.TrimSpace(line), 10, 64)
	}
	measure := func(kind string, do func(i int) error) ([]float64, error) {
		var ms []float64
		for i := range *n {
			t0 := monotonic()
			if err := do(i); err != nil {
				return nil, fmt.Errorf("%s: %w", kind, err)
			}
			t1, err := started()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", kind, err)
			}
			ms = append(ms, float64(t1-t0)/1e6)
			time.Sleep(*gap)
		}
		return ms, nil
	}
	payload := func(dir, name string) (string, error) {
		p := filepath.Join(dir, name)
		return p, os.WriteFile(p, []byte("x\n"), 0o640)
	}
	run := func(name string, arg ...string) error {
		out, err := exec.Command(name, arg...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %v: %s", name, err, out)
		}
		return nil
	}
	var line []string
	report := func(kind string, ms []float64) {
		slices.Sort(ms)
		line = append(line, fmt.Sprintf("%s_p50_ms=%.2f %s_p99_ms=%.2f", kind, pct(ms, 50), kind, pct(ms, 99)))
	}

	ms, err := measure("submit", func(i int) error {
		p, err := payload(src, fmt.Sprintf("sub-%06d", i))
		if err != nil {
			return err
		}
		return run(s.bin, "submit", "--config", cfg, p)
	})
	if err != nil {
		return err
	}
	report("submit", ms)
	ms, err = measure("cp", func(i int) error {
		p, err := payload(src, fmt.Sprintf("cp-%06d", i))
		if err != nil {
			return err
		}
		return run("cp", p, filepath.Join(s.spool, "incoming"))
	})
	if err != nil {
		return err
	}
	report("cp", ms)
	var staged []string
	for i := range *n {
		p, err := payload(stage, fmt.Sprintf("ren-%06d", i))
		if err != nil {
			return err
		}
		staged = append(staged, p)
	}
	ms, err = measure("rename", func(i int) error {
		return os.Rename(staged[i], filepath.Join(s.spool, "incoming", filepath.Base(staged[i])))
	})
	if err != nil {
		return err
	}
	report("rename", ms)
	var cli []float64
	for range *n {
		t0 := time.Now()
		if err := run(s.bin, "version"); err != nil {
			return err
		}
		cli = append(cli, float64(time.Since(t0).Microseconds())/1e3)
	}
	report("cli", cli)
	fmt.Println(strings.Join(line, " "))
	return d.stop()
}

// pct returns the p-th percentile of sorted values, the nearest rank.
func pct(sorted []float64, p int) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100
	return sorted[max(min(i, len(sorted))-1, 0)]
}
