// Package pgqueue is a job source over a PostgreSQL table, so that daemons
// on several hosts share one queue. A [Queue] is a [jobs.Source], a
// [jobs.Acker], a [jobs.Waker] and a [jobs.Depther]; it knows nothing of
// the pool, systemd or configuration files. It follows the pattern of the
// PostgreSQL queues that work (claim with FOR UPDATE SKIP LOCKED, hold a
// lease, finish with a fenced update, rescue expired leases), with a
// lease that is renewed, so that a crashed host's jobs come back within
// one lease TTL rather than after a fixed timeout of an hour.
//
// # The table
//
// [Migrate] creates, in a schema of its own (default "jobdaemon"), the
// table jobs: one row per job, with its queue, state (available, running,
// completed, failed, cancelled), priority, run_at, attempt, max_attempts,
// payload (bytea), unique_key, lease_owner, lease_until, last_error,
// result (a [Record], as jsonb), created_at and finished_at; the
// functions claim and finish that the daemons call (plpgsql, so that
// their plans are cached, and never a sequential scan: a plan made while
// the queue was empty would otherwise scan the whole table at every claim
// after a burst); and the function enqueue, so that any language
// enqueues a job with one statement, inside its own transaction if it
// likes:
//
//	SELECT jobdaemon.enqueue(convert_to('{"user": 42}', 'UTF8'), queue => 'mail');
//
// docs/POSTGRES.md describes every column for people who query the table.
//
// # The life of a job
//
//  1. Enqueued (enqueue, [Enqueue], [Queue.Submit]): state available,
//     attempt 0. A job due later is available with a future run_at.
//  2. Claimed by NextJob: one statement claims as many due jobs as the
//     daemon has free slots, by priority (lower first), run_at and id,
//     skipping rows that other daemons are claiming (SKIP LOCKED). The
//     row becomes running, its attempt rises by one, and it is leased:
//     lease_owner names this queue (host, boot id, pid and a random tag)
//     and lease_until is now() + 0.9 × LeaseTTL. Only the database's clock
//     is used. A claim goes on from the last job this queue claimed,
//     rather than from the start of the queue, where the jobs claimed
//     since the last vacuum leave dead index entries that every claim
//     would step over; it starts from the start after every wake-up (a
//     NOTIFY, a poll, jobs put back) and when it finds too few. So a job
//     that sorts before the last one claimed (a more urgent job enqueued
//     without NOTIFY, a retry that came due) waits for the next wake-up,
//     at most PollInterval.
//  3. Leased while it runs: every LeaseTTL/3 the queue renews the leases
//     of all the jobs it holds, in one statement, so that a job of six
//     hours holds a lease of a minute.
//  4. Finished by Done, which returns at once: the results of the jobs
//     that ended are written together, in order, in one statement, by the
//     next claim (in the same round trip and transaction) or, within
//     2 ms, by a background writer. The write is fenced:
//     a row is written only if it is still running, leased to this queue,
//     at the attempt that ran. Zero rows means the lease was lost (it
//     expired and another daemon rescued the job): the result is dropped
//     with a warning, so that no job is ever completed twice. A success
//     makes the job completed; a failure makes it available again at
//     now() + backoff (doubling, with jitter) while it has attempts left,
//     and failed after its last; a job the daemon interrupted (a stop)
//     is available again at once, its attempt not counted.
//  5. Rescued if its daemon dies: every LeaseTTL/10, each daemon tries
//     to take an advisory lock and, if it gets it, makes the jobs whose
//     lease expired available again (failed, if that was their last
//     attempt: the crash may be the job's doing). A crashed host's jobs
//     are thus back within LeaseTTL of its last renewal.
//  6. Pruned: completed jobs older than Options.Retention are deleted, in
//     batches of 1000. Failed jobs stay for inspection.
//
// A job's ID, in the daemon, is its row id as a decimal string: unique
// for ever, which a unique_key is not (it is freed when its job ends).
// Its Meta holds "queue", and "unique_key" when the row has one.
//
// # Waking up: NOTIFY as a debounced hint
//
// A trigger on the table sends NOTIFY (on the channel named after the
// schema, with the queue's name as payload) when due jobs are inserted;
// each Queue LISTENs on a connection of its own, made again with backoff
// when it breaks, and wakes its dispatcher on each NOTIFY for its queue.
// NOTIFY is only a hint: the queue also polls every PollInterval.
//
// A transaction that sends NOTIFY takes a lock global to the database at
// commit, and holds it until its commit record is flushed: all notifying
// transactions commit one at a time. A NOTIFY per enqueue would thus
// serialize every enqueuer. So the trigger notifies once per statement,
// and at most once per queue in any 20 ms: it claims a row of the table
// wakeup with FOR UPDATE SKIP LOCKED, and a transaction that finds the
// row recently notified, or locked by another notifying transaction,
// sends nothing. A job committed just after the NOTIFY that covered its
// moment would then wait for the next poll; the queue therefore looks
// again 25 ms after each NOTIFY. An idle daemon claims a notified job in
// about a millisecond on a local server.
//
// # When the database goes away
//
// Running jobs go on. Their results are kept in memory and written, in
// order, once the database answers again (the writer probes it with
// backoff from 100 ms to 5 s); leases are renewed first. Meanwhile
// NextJob claims nothing: it returns an error at once, without touching
// the network, and the dispatcher backs off; the queue wakes it when the
// database is back. A daemon that stops while the database is away waits
// up to 10 s in Close, then gives up: those jobs run again elsewhere once
// their leases expire. Delivery is at least once: a job runs twice only
// when its daemon lost its lease (a crash, or an outage longer than the
// lease) while it ran.
//
// # Behind PgBouncer
//
// Every statement of the queue is a transaction of its own, and its
// advisory locks are transaction-level: all of it works through a
// PgBouncer in transaction mode, except LISTEN, which needs a session.
// Set Options.ListenDSN to a direct connection to PostgreSQL, or set
// NoListen and rely on polling (with a shorter PollInterval). pgx
// prepares the claim's and the write's statements: with PgBouncer older
// than 1.21, or without max_prepared_statements, add
// default_query_exec_mode=exec to the DSN (the tests run the queue in
// that mode and in simple_protocol).
package pgqueue
