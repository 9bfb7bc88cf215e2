package pgqueue

import (
	"strings"

	"github.com/jackc/pgx/v5"
)

// statements are the queue's SQL, with the schema filled in. Durations
// travel as microseconds ($n * interval '1 microsecond') and every time
// is the database's now(): the hosts' clocks are never compared.
type statements struct {
	claim, write, renew, rescue, prune, stats, notify string
}

func newStatements(schema string) statements {
	r := strings.NewReplacer("{t}", pgx.Identifier{schema, "jobs"}.Sanitize(), "{channel}", "'"+schema+"'")
	return statements{
		// $1 queue, $2 how many, $3 owner, $4 lease µs, $5 default
		// max_attempts, $6 max payload (-1: none). A payload over the
		// limit is not fetched: its job is failed at once.
		claim: r.Replace(`
WITH c AS (
    SELECT id FROM {t}
    WHERE state = 'available' AND queue = $1 AND run_at <= now()
    ORDER BY priority, run_at, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED)
UPDATE {t} j
SET state = 'running', attempt = j.attempt + 1, lease_owner = $3,
    lease_until = now() + $4 * interval '1 microsecond'
FROM c WHERE j.id = c.id
RETURNING j.id, j.attempt, coalesce(j.max_attempts, $5), j.priority, j.run_at,
    coalesce(j.unique_key, ''), octet_length(j.payload),
    CASE WHEN $6::bigint < 0 OR octet_length(j.payload) <= $6::bigint THEN j.payload END`),

		// Results, fenced: the row must still be ours, running, at the
		// attempt we ran. $1 owner, then one array per column.
		write: r.Replace(`
UPDATE {t} j
SET state = f.state,
    attempt = f.new_attempt,
    run_at = CASE WHEN f.state = 'available' THEN now() + f.delay * interval '1 microsecond' ELSE j.run_at END,
    lease_owner = NULL,
    lease_until = NULL,
    last_error = coalesce(nullif(f.last_error, ''), j.last_error),
    result = coalesce(nullif(f.result, '')::jsonb, j.result),
    finished_at = CASE WHEN f.state = 'available' THEN NULL ELSE now() END
FROM unnest($2::bigint[], $3::int[], $4::text[], $5::int[], $6::bigint[], $7::text[], $8::text[])
    AS f(id, attempt, state, new_attempt, delay, last_error, result)
WHERE j.id = f.id AND j.state = 'running' AND j.lease_owner = $1 AND j.attempt = f.attempt
RETURNING j.id`),

		// All leases of this queue in one statement. $1 owner, $2 lease
		// µs, $3 ids.
		renew: r.Replace(`
UPDATE {t} SET lease_until = now() + $2 * interval '1 microsecond'
WHERE id = ANY($3::bigint[]) AND lease_owner = $1 AND state = 'running'
RETURNING id`),

		// Expired leases, except this queue's own live ones, which it
		// renews. A job that was on its last attempt fails. $1 owner, $2
		// ids held, $3 default max_attempts.
		rescue: r.Replace(`
WITH r AS (
    SELECT id FROM {t}
    WHERE state = 'running' AND lease_until < now()
      AND NOT (lease_owner = $1 AND id = ANY($2::bigint[]))
    ORDER BY lease_until
    LIMIT 1000
    FOR UPDATE SKIP LOCKED)
UPDATE {t} j
SET state = CASE WHEN j.attempt >= coalesce(j.max_attempts, $3) THEN 'failed' ELSE 'available' END,
    finished_at = CASE WHEN j.attempt >= coalesce(j.max_attempts, $3) THEN now() END,
    last_error = 'lease of ' || coalesce(j.lease_owner, '?') || ' expired at ' || j.lease_until::text ||
        CASE WHEN j.attempt >= coalesce(j.max_attempts, $3) THEN ', on its last attempt' ELSE '' END,
    run_at = now(),
    lease_owner = NULL,
    lease_until = NULL
FROM r WHERE j.id = r.id
RETURNING j.id, j.queue, j.state, j.last_error`),

		// $1 queue, $2 retention µs.
		prune: r.Replace(`
DELETE FROM {t} WHERE id IN (
    SELECT id FROM {t}
    WHERE state = 'completed' AND queue = $1 AND finished_at < now() - $2 * interval '1 microsecond'
    ORDER BY finished_at
    LIMIT 1000
    FOR UPDATE SKIP LOCKED)`),

		// One count per partial index.
		stats: r.Replace(`
SELECT
    (SELECT count(*) FROM {t} WHERE state = 'available' AND queue = $1 AND run_at <= now()),
    (SELECT count(*) FROM {t} WHERE state = 'available' AND queue = $1 AND run_at > now()),
    (SELECT count(*) FROM {t} WHERE state = 'running' AND queue = $1),
    (SELECT count(*) FROM {t} WHERE state = 'failed' AND queue = $1)`),

		notify: r.Replace(`SELECT pg_notify({channel}, $1)`),
	}
}
