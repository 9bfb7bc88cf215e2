package pgqueue

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// recheckAfter is when a queue looks again after a NOTIFY: jobs
// committed just after the notifying transaction may have sent none (the
// trigger debounces NOTIFY, see the package documentation).
const recheckAfter = 25 * time.Millisecond

// listen is the goroutine of the LISTEN connection: a connection of its
// own, outside the pool, made again with backoff whenever it breaks.
// Each NOTIFY for this queue wakes the dispatcher, and again a moment
// later; polling covers the time the connection is down.
func (q *Queue) listen() {
	defer q.wg.Done()
	if q.listenC == nil {
		return
	}
	backoff := 100 * time.Millisecond
	lost := false
	for {
		err := q.listenOnce(func() {
			if lost {
				q.log.Info("LISTEN connection made again")
			}
			lost, backoff = false, 100*time.Millisecond
		})
		select {
		case <-q.quit:
			return
		default:
		}
		if !lost {
			q.log.Warn("LISTEN connection lost: polling until it is back", "server", q.where,
				"err", err, "poll_interval", q.opts.PollInterval)
			lost = true
		} else {
			q.log.Debug("LISTEN connection failed again", "err", err, "retry_in", backoff)
		}
		select {
		case <-q.quit:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// listenOnce connects, listens and waits for notifications until the
// connection fails or the queue closes. ready is called once LISTEN is
// in force.
func (q *Queue) listenOnce(ready func()) error {
	cctx, cancel := context.WithTimeout(q.bg, opTimeout)
	conn, err := pgx.ConnectConfig(cctx, q.listenC)
	cancel()
	if err != nil {
		return connectError(q.listenC, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(q.bg, "LISTEN "+pgx.Identifier{q.opts.Schema}.Sanitize()); err != nil {
		return err
	}
	q.listenPid.Store(conn.PgConn().PID())
	defer q.listenPid.Store(0)
	ready()
	q.wakeUp() // whatever came while nobody listened
	for {
		n, err := conn.WaitForNotification(q.bg)
		if err != nil {
			return err
		}
		if n.Payload == q.opts.Queue {
			q.wakeUp()
			q.recheck()
		}
	}
}

// recheck wakes the dispatcher once more, recheckAfter from now, unless
// a recheck is pending already.
func (q *Queue) recheck() {
	if q.rechecking.CompareAndSwap(false, true) {
		time.AfterFunc(recheckAfter, func() {
			q.rechecking.Store(false)
			q.wakeUp()
		})
	}
}

// ListenerPid returns the server process id of the LISTEN connection's
// session, or 0 when there is none. Tests end that session to check
// that the queue recovers.
func (q *Queue) ListenerPid() uint32 { return q.listenPid.Load() }
