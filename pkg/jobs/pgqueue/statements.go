package pgqueue

import (
	"strings"

	"github.com/jackc/pgx/v5"
)

// statements are the queue's SQL, with the schema filled in. Durations
// travel as microseconds ($n * interval '1 microsecond') and every time
// is the database's now(): the hosts' clocks are never compared.
//
// claim and write call functions whose plans are safe to cache. The
// others run rarely, and with a plan made for each execution (see
// planEach), so that no plan cached while the table was small scans it
// whole later.
type statements struct {
	claim, write, renew, rescue, prune, stats, notify string
}

// planEach, as the first argument of a query, has it planned for its
// parameters and the table as they are, at each execution.
const planEach = pgx.QueryExecModeCacheDescribe

func newStatements(schema string) statements {
	r := strings.NewReplacer("{t}", pgx.Identifier{schema, "jobs"}.Sanitize(),
		"{s}", pgx.Identifier{schema}.Sanitize(), "{channel}", "'"+schema+"'")
	return statements{
		// See the functions in schema.go.
		claim: r.Replace(`SELECT * FROM {s}.claim($1, $2, $3, $4, $5, $6, $7, $8, $9)`),
		write: r.Replace(`SELECT {s}.finish($1, $2, $3, $4, $5, $6, $7, $8)`),

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
    (SELECT count(*) FROM {t} WHERE lease_until IS NOT NULL AND state = 'running' AND queue = $1),
    (SELECT count(*) FROM {t} WHERE state = 'failed' AND queue = $1),
    (SELECT coalesce(extract(epoch FROM now() - min(run_at)), 0)::float8
       FROM {t} WHERE state = 'available' AND queue = $1 AND run_at <= now())`),

		notify: r.Replace(`SELECT pg_notify({channel}, $1)`),
	}
}
