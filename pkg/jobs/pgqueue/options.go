package pgqueue

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
)

// Defaults of Options.
const (
	DefaultSchema       = "jobdaemon"
	DefaultQueue        = "default"
	DefaultLeaseTTL     = 60 * time.Second
	DefaultPollInterval = time.Second
	DefaultRetention    = 7 * 24 * time.Hour
	DefaultMaxPayload   = 16 << 20
	// MinLeaseTTL is the shortest Options.LeaseTTL.
	MinLeaseTTL = time.Second
	// KeepForever, as Options.Retention, never prunes completed jobs.
	KeepForever time.Duration = -1
)

// Options configure a Queue. Only DSN is required.
type Options struct {
	// DSN is the libpq connection string, as a URL
	// (postgres://user:secret@db.example/app?sslmode=verify-full) or as
	// key=value pairs (host=/run/postgresql dbname=app). The password may
	// come from it, from PGPASSWORD or from ~/.pgpass; it never appears in
	// a log record or an error of this package.
	DSN string
	// ListenDSN, if set, is used for the connection that LISTENs for new
	// jobs, instead of DSN: behind a PgBouncer in transaction mode, point
	// it at PostgreSQL itself (see the package documentation).
	ListenDSN string
	// NoListen, if true, opens no LISTEN connection: new jobs are found by
	// polling only, every PollInterval.
	NoListen bool
	// Schema holds the job table (default "jobdaemon"); Migrate creates
	// it. Lower-case letters, digits and _.
	Schema string
	// Queue is the queue this daemon takes jobs from (default "default").
	Queue string
	// LeaseTTL is how long a claimed job stays leased without renewal
	// (default 60 s). The queue renews all its leases every LeaseTTL/3;
	// the jobs of a daemon that died are back in the queue within
	// LeaseTTL. Minimum 1 s.
	LeaseTTL time.Duration
	// PollInterval is how often the queue looks for jobs that no NOTIFY
	// announced (default 1 s): jobs whose run_at has come, and jobs
	// enqueued while the LISTEN connection was down.
	PollInterval time.Duration
	// Retention is how long completed jobs are kept before they are
	// pruned, in batches (default 7 days); KeepForever (any negative
	// value) keeps them. Failed jobs are never pruned.
	Retention time.Duration
	// MaxAttempts is the number of runs a job gets in all, unless its row
	// says otherwise (max_attempts); 0 or less means 1.
	MaxAttempts int
	// Backoff is the delay before a failed job's first retry; it doubles
	// with each retry, up to an hour, spread by ±20% (see jobs.Retry).
	// 0 or less retries at once.
	Backoff time.Duration
	// MaxPayload is the largest payload run, in bytes (default 16 MiB): a
	// claimed job with a larger one fails at once, its row kept, and
	// Submit refuses one. Negative means no limit.
	MaxPayload int64
	// Logger receives the queue's log records; nil discards them.
	Logger *slog.Logger
	// OnClaim, if set, is called by NextJob, by the dispatcher,
	// with each batch of jobs it claimed, before it hands out the first:
	// for metrics (batch sizes, claim-to-start latency). It must return
	// quickly and must not keep or change the jobs.
	OnClaim func(batch []*jobs.Job)
}

var errNoDSN = errors.New("no DSN given")

func (o *Options) withDefaults() error {
	if o.DSN == "" {
		return errNoDSN
	}
	if o.Schema == "" {
		o.Schema = DefaultSchema
	}
	if err := checkSchema(o.Schema); err != nil {
		return err
	}
	if o.Queue == "" {
		o.Queue = DefaultQueue
	}
	if err := checkQueue(o.Queue); err != nil {
		return err
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.LeaseTTL < MinLeaseTTL {
		return fmt.Errorf("lease TTL %v is under the minimum of %v", o.LeaseTTL, MinLeaseTTL)
	}
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.Retention == 0 {
		o.Retention = DefaultRetention
	}
	if o.MaxPayload == 0 {
		o.MaxPayload = DefaultMaxPayload
	}
	o.MaxAttempts = max(o.MaxAttempts, 1)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// CheckSchema returns nil when name can be Options.Schema, and otherwise
// an error wrapping ErrBadName that says which names can: for checking a
// configuration before Open.
func CheckSchema(name string) error { return checkSchema(name) }

// CheckQueue returns nil when name can be Options.Queue, and otherwise an
// error wrapping ErrBadName that says which names can.
func CheckQueue(name string) error { return checkQueue(name) }

// checkQueue accepts a queue name of 1 to 200 bytes of printable UTF-8.
func checkQueue(q string) error {
	ok := q != "" && len(q) <= 200 && utf8.ValidString(q) &&
		strings.IndexFunc(q, func(r rune) bool { return !unicode.IsPrint(r) }) < 0
	if !ok {
		return fmt.Errorf("%w: queue %q: use 1 to 200 bytes of printable UTF-8", ErrBadName, q)
	}
	return nil
}

// leaseOwner names this process in lease_owner: host, boot id, pid, and
// a random tag. Host, boot and pid say where a job runs, to whoever reads
// the table; the tag keeps two Queues apart that would share the rest: two
// in one process, or two containers with the same host name, which share
// the kernel's boot id and may both run as pid 1.
func leaseOwner() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown-host"
	}
	boot := "no-boot-id"
	if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		boot = strings.TrimSpace(string(b))
	}
	tag := make([]byte, 4)
	_, _ = rand.Read(tag) // never fails on Linux
	return fmt.Sprintf("%s/%s/%d/%s", host, boot, os.Getpid(), hex.EncodeToString(tag))
}
