package pgqueue_test

import (
	"context"
	"log"
	"log/slog"
	"os"

	"github.com/jackc/pgx/v5"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
	"github.com/jobdaemon/jobdaemon/pkg/jobs/pgqueue"
)

// mailer sends the mail its jobs describe; the Queue it embeds is its
// job source.
type mailer struct {
	*pgqueue.Queue
}

func (m *mailer) RunJob(ctx context.Context, job *jobs.Job) error {
	log.Printf("sending mail %s (attempt %d): %s", job.ID, job.Attempt, job.Payload)
	return nil
}

// A daemon over the queue "mail": run it on as many hosts as needed.
func Example() {
	ctx := context.Background()
	dsn := os.Getenv("DATABASE_URL")
	var q *pgqueue.Queue
	if !jobs.IsChild() { // children only run jobs: they need no connection
		if err := pgqueue.MigrateDSN(ctx, dsn, pgqueue.DefaultSchema); err != nil { // idempotent
			log.Fatal(err)
		}
		var err error
		q, err = pgqueue.Open(ctx, pgqueue.Options{DSN: dsn, Queue: "mail", MaxAttempts: 5, Logger: slog.Default()})
		if err != nil {
			log.Fatal(err)
		}
		defer q.Close()
	}
	if err := jobs.Run(ctx, &mailer{q}, jobs.Options{MaxChildren: 8}); err != nil {
		log.Print(err)
	}
}

// Enqueue in the same transaction as the application's own writes: the
// mail goes out only if the order is stored.
func ExampleEnqueue() {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO orders (id) VALUES (42)"); err != nil {
			return err
		}
		_, err := pgqueue.Enqueue(ctx, tx, pgqueue.DefaultSchema, pgqueue.NewJob{
			Queue:     "mail",
			Payload:   []byte(`{"order": 42}`),
			UniqueKey: "order-42-confirmation",
		})
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
}
