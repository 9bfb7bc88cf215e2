package main

import (
	"bufio"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// wakeCmd starts the daemon with the default settings, idle (-k 0) or
// with k jobs that sleep, and prints
//
//	wakeups_per_s=W listings=L rss_kb=R rss_anon_kb=A threads=T
//
// W counts the context switches of all the daemon's threads (voluntary
// and not, from /proc/PID/task/*/status) over the window: each is a
// thread that went to sleep or was woken. L counts the times incoming/
// was opened (listed) in the window, by inotify's IN_OPEN on the
// directory itself. R is VmRSS at the end.
func wakeCmd(args []string) error {
	fs := flag.NewFlagSet("wake", flag.ExitOnError)
	var s setup
	s.flags(fs)
	k := fs.Int("k", 0, "sleeping jobs")
	window := fs.Duration("window", 20*time.Second, "how long to count")
	settle := fs.Duration("settle", 2*time.Second, "wait this long after the start, before counting")
	fs.Parse(args)
	if s.spool == "" || s.work == "" {
		return fmt.Errorf("-dir and -work are required")
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
	defer d.stop()
	if err := waitFile(filepath.Join(s.work, "control.sock"), 10*time.Second); err != nil {
		return err
	}
	if *k > 0 {
		if _, err := waitChildren(d.pid(), *k, "sleep", 10*time.Second); err != nil {
			return err
		}
	}
	time.Sleep(*settle)

	opens, err := watchOpens(filepath.Join(s.spool, "incoming"))
	if err != nil {
		return err
	}
	defer unix.Close(opens)
	sw0, err := switches(d.pid())
	if err != nil {
		return err
	}
	// The events are read every 100 ms rather than once at the end:
	// inotify merges an event into the last one queued when they are the
	// same and it is still unread, so a listing every idle_interval would
	// count as one over the whole window.
	listings := 0
	for end := time.Now().Add(*window); time.Now().Before(end); {
		time.Sleep(min(100*time.Millisecond, time.Until(end)))
		l, err := countOpens(opens)
		if err != nil {
			return err
		}
		listings += l
	}
	sw1, err := switches(d.pid())
	if err != nil {
		return err
	}
	st, err := procStatus(d.pid())
	if err != nil {
		return err
	}
	threads, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", d.pid()))
	fmt.Printf("wakeups_per_s=%.2f listings=%d rss_kb=%s rss_anon_kb=%s threads=%d\n",
		float64(sw1-sw0)/window.Seconds(), listings, st["VmRSS"], st["RssAnon"], len(threads))
	if err := d.stop(); err != nil {
		return err
	}
	return nil
}

// switches returns the context switches of all of pid's threads.
func switches(pid int) (int64, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if err != nil || len(tasks) == 0 {
		return 0, fmt.Errorf("no threads of %d", pid)
	}
	var n int64
	for _, t := range tasks {
		st, err := readStatus(t)
		if err != nil {
			continue // the thread ended
		}
		for _, k := range []string{"voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"} {
			v, _ := strconv.ParseInt(st[k], 10, 64)
			n += v
		}
	}
	return n, nil
}

func procStatus(pid int) (map[string]string, error) {
	return readStatus(fmt.Sprintf("/proc/%d/status", pid))
}

// readStatus reads a /proc status file into its keys and first words.
func readStatus(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok {
			if fs := strings.Fields(v); len(fs) > 0 {
				m[k] = fs[0]
			}
		}
	}
	return m, sc.Err()
}

// watchOpens returns a non-blocking inotify descriptor that reports each
// opening of dir itself, as a listing does.
func watchOpens(dir string) (int, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return -1, err
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_OPEN|unix.IN_ONLYDIR); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// countOpens counts the openings of the watched directory itself so far.
func countOpens(fd int) (int, error) {
	n := 0
	buf := make([]byte, 64<<10)
	for {
		m, err := unix.Read(fd, buf)
		if err == unix.EAGAIN {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		for b := buf[:m]; len(b) >= unix.SizeofInotifyEvent; {
			mask := binary.NativeEndian.Uint32(b[4:8])
			size := int(binary.NativeEndian.Uint32(b[12:16]))
			if mask&unix.IN_OPEN != 0 && mask&unix.IN_ISDIR != 0 && size == 0 {
				n++
			}
			b = b[min(unix.SizeofInotifyEvent+size, len(b)):]
		}
	}
}
