package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
)

// jobLog appends one line per finished job to a file, in the tab-separated
// format of GNU parallel's --joblog, so that the tools written for it
// (and awk) work on it:
//
//	Seq Host Starttime JobRuntime Send Receive Exitval Signal Command
//
// Send is always 0; Receive is the size of the output tail kept (at most
// 64 KiB), not all the output; a job killed by a signal has Exitval -1.
type jobLog struct {
	mu   sync.Mutex
	f    *os.File
	host string
	seq  int
}

// openJobLog opens the job log for appending. It is a regular file or
// nothing: a symbolic link is not followed, and a FIFO is refused rather
// than waited on (an open for writing blocks until a reader comes).
func openJobLog(path string) (*jobLog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0o640)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("open joblog %s: a symbolic link: refusing to follow it", path)
	}
	if err != nil {
		return nil, fmt.Errorf("open joblog: %w", err)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file (%v)", path, fi.Mode().Type())
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open joblog: %w", err)
	}
	if fi.Size() == 0 {
		if _, err := f.WriteString("Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n"); err != nil {
			f.Close()
			return nil, fmt.Errorf("write joblog: %w", err)
		}
	}
	host, _ := os.Hostname()
	return &jobLog{f: f, host: host}, nil
}

// write logs one finished job; args is the command as it was run.
func (l *jobLog) write(res jobs.Result, args []string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	start := time.Now().Add(-res.Duration)
	// A job name may hold a tab or a newline; the log must stay one line
	// per job.
	cmd := strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return '?'
		}
		return r
	}, strings.Join(args, " "))
	_, err := fmt.Fprintf(l.f, "%d\t%s\t%.3f\t%.3f\t0\t%d\t%d\t%d\t%s\n",
		l.seq, l.host, float64(start.UnixMilli())/1000, res.Duration.Seconds(),
		len(res.Output), res.ExitCode, int(res.Signal), cmd)
	return err
}

func (l *jobLog) Close() error { return l.f.Close() }
