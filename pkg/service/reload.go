package service

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
)

// onReload reads the settings again at the start of a reload (OnReload):
// the live ones apply, the others are named in a warning and keep their
// value until a restart. The pool's size changes only when the configured
// one did, so that a size set at run time (scale, TTIN, TTOU) survives.
func (r *daemonRun) onReload(o *jobs.Options) error {
	r.notifier.Reloading()
	next, err := r.svc.settings(context.Background(), "run", r.configFile)
	if err != nil {
		return fmt.Errorf("new configuration refused, the old one stays:\n%w", err)
	}
	keys, err := reloadSettings(&r.st, next, o, r.ls)
	if len(keys) > 0 {
		r.log.Warn("these changes need a restart and are ignored until then", "keys", strings.Join(keys, ", "))
	}
	return err
}

// reloadSettings applies to cur, the settings in force, what a reload
// may change of next: the live settings, into cur, o and the log levels.
// It returns the keys of the changes that wait for a restart.
func reloadSettings(cur *Settings, next Settings, o *jobs.Options, ls *logSetup) ([]string, error) {
	keys := RestartKeys(*cur, next)
	if err := ls.setLevels(next.Log.Level, next.Log.JobOutput); err != nil {
		return keys, err
	}
	current, changed := o.MaxChildren, next.Pool.MaxChildren != cur.Pool.MaxChildren
	CopyLive(cur, &next)
	setRuntimeOptions(o, cur)
	if !changed {
		o.MaxChildren = current
	}
	return keys, nil
}

// onReloaded ends a reload for systemd: READY=1 whether it was applied or
// refused, since the daemon runs on either way, with the reason of a
// refusal in STATUS=.
func (r *daemonRun) onReloaded(err error) {
	r.status.setReloadError(err)
	r.notifier.ReadyStatus(r.status.line(r.d))
}

// onStop tells systemd that the daemon stops, and keeps its signals
// caught until it exits.
func (r *daemonRun) onStop(mode jobs.StopMode) {
	r.holdSignals()
	r.stopMode = mode
	if mode >= jobs.Graceful && r.stopped.IsZero() {
		// A drain is not a stop for systemd: the service stays "active"
		// until the daemon exits.
		r.stopped = time.Now()
		r.notifier.Stopping()
	}
	r.updateStatus()
}

// heartbeat returns the dispatcher's heartbeat and its interval: the
// watchdog ping (sent from the dispatcher loop itself, so that a stuck loop
// trips systemd's watchdog), STATUS=, and, while a stop takes its time,
// more time from systemd. Without systemd there is nothing to tell, and no
// heartbeat.
func (r *daemonRun) heartbeat() (func(), time.Duration) {
	if !r.notifier.Enabled() {
		return nil, 0
	}
	interval := time.Second
	if w := r.notifier.WatchdogInterval(); w > 0 {
		interval = min(w, interval)
	}
	var stallAfter time.Duration
	if v := os.Getenv(envTestStall); v != "" {
		stallAfter, _ = time.ParseDuration(v)
	}
	began := time.Now()
	var lastStatus time.Time
	return func() {
		if stallAfter > 0 && time.Since(began) > stallAfter {
			r.log.Warn("test hook: the dispatcher stalls now", "env", envTestStall)
			select {} // for the watchdog test only: see envTestStall
		}
		r.notifier.Watchdog()
		if time.Since(lastStatus) >= 5*time.Second || r.stopMode != 0 {
			lastStatus = time.Now()
			r.updateStatus()
		}
		if r.stopMode == jobs.Graceful {
			// Ask for the time this stop may still take, plus a margin:
			// systemd extends its stop timeout only if that is later. Past
			// the daemon's own deadline, ask no more: systemd's
			// TimeoutStopSec is the backstop for a child that cannot die.
			if left := time.Until(r.stopped.Add(r.stopTime)); left > 0 {
				r.notifier.ExtendTimeout(left + 5*time.Second)
			}
		}
	}, interval
}

// envTestStall, set to a duration, makes the dispatcher hang that long
// after start: the integration tests use it to show that systemd's
// watchdog catches a stuck dispatcher. It is not for production.
const envTestStall = "JOBDAEMON_TEST_STALL_AFTER"

// updateStatus refreshes STATUS= off the dispatcher: the status
// asks the source for its depth and reads /proc for every child, which
// the loop that also pings the watchdog must not wait for.
func (r *daemonRun) updateStatus() {
	if !r.notifier.Enabled() || !r.status.busy.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer r.status.busy.Store(false)
		r.notifier.Status(r.status.line(r.d))
	}()
}

// statusLine makes systemd's STATUS=.
type statusLine struct {
	reloadErr atomic.Pointer[string] // why the last reload was refused, while it was
	busy      atomic.Bool            // a STATUS= update is under way
}

func (s *statusLine) setReloadError(err error) {
	if err == nil {
		s.reloadErr.Store(nil)
		return
	}
	e := oneLine(err.Error())
	s.reloadErr.Store(&e)
}

// line is "6/8 busy, 120 queued, 10231 done, 3 failed", and why the last
// reload was refused, while it was.
func (s *statusLine) line(d *jobs.Daemon) string {
	st := d.Summary()
	line := fmt.Sprintf("%d/%d busy", st.Busy, st.MaxChildren)
	if st.Queued >= 0 {
		line += fmt.Sprintf(", %d queued", st.Queued)
	}
	line += fmt.Sprintf(", %d completed, %d failed", st.JobsCompleted, st.JobsFailed)
	switch st.State {
	case jobs.StatePaused, jobs.StateDraining, jobs.StateStopping:
		line = string(st.State) + ": " + line
	}
	if st.WorkerFailedStarts > 0 {
		line += fmt.Sprintf("; %d workers in a row ended before their first answer", st.WorkerFailedStarts)
	}
	if st.StartBackoff > 0 {
		line += "; jobs cannot be started: " + oneLine(st.LastStartError)
	}
	if e := s.reloadErr.Load(); e != nil {
		line += "; reload refused: " + *e
	}
	return line
}
