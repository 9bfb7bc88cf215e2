package service

import (
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"
)

// progressCounts is where a drain run stands.
type progressCounts struct {
	done, failed, running, queued int
}

// progressReporter shows the progress of run --drain: a live bar on a
// terminal, a log line every few seconds otherwise (a bar's carriage
// returns would only clutter a log file or the journal).
type progressReporter struct {
	w      io.Writer
	log    *slog.Logger
	counts func() progressCounts
	tty    bool
	stopc  chan struct{}
	done   chan struct{}
	once   sync.Once
	began  atomic.Bool
}

func newProgress(w io.Writer, log *slog.Logger, counts func() progressCounts) *progressReporter {
	return &progressReporter{
		w: w, log: log, counts: counts, tty: isTerminal(w),
		stopc: make(chan struct{}), done: make(chan struct{}),
	}
}

func (p *progressReporter) start() {
	p.began.Store(true)
	go p.loop()
}

// stop ends the reports, after a last one; it may be called more than
// once, and before start (a daemon that failed to start).
func (p *progressReporter) stop() {
	p.once.Do(func() {
		close(p.stopc)
		if p.began.Load() {
			<-p.done
		}
	})
}

func (p *progressReporter) loop() {
	defer close(p.done)
	interval := 5 * time.Second
	var bar *progressbar.ProgressBar
	if p.tty {
		interval = 200 * time.Millisecond
		bar = progressbar.NewOptions(-1,
			progressbar.OptionSetWriter(p.w),
			progressbar.OptionSetDescription("jobs"),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionFullWidth(),
		)
	}
	start := time.Now()
	report := func() {
		c := p.counts()
		finished := c.done + c.failed
		total := finished + c.running + c.queued
		if bar != nil {
			// The count first: Describe draws the bar at once, and would
			// draw the new text beside the last tick's count.
			bar.ChangeMax(max(total, 1))
			_ = bar.Set(finished)
			bar.Describe(fmt.Sprintf("%d done, %d failed, %d running", c.done, c.failed, c.running))
		} else {
			p.log.Info("progress", "done", c.done, "failed", c.failed, "running", c.running,
				"queued", c.queued, "eta", eta(start, finished, total).String())
		}
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		report()
		select {
		case <-t.C:
		case <-p.stopc:
			if bar != nil {
				report() // the final state stays on the screen
				_ = bar.Finish()
				fmt.Fprintln(p.w)
			}
			return
		}
	}
}

// eta estimates the time left from the rate so far; 0 when unknown.
func eta(start time.Time, finished, total int) time.Duration {
	if finished == 0 || total <= finished {
		return 0
	}
	per := time.Since(start) / time.Duration(finished)
	return (per * time.Duration(total-finished)).Round(time.Second)
}
