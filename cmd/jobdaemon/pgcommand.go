package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/spf13/cobra"

	"github.com/jobdaemon/jobdaemon/internal/config"
	"github.com/jobdaemon/jobdaemon/pkg/jobs/pgqueue"
	"github.com/jobdaemon/jobdaemon/pkg/service"
)

// pgCommand is "jobdaemon pg": what an operator does to the PostgreSQL
// queue itself.
func pgCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "pg COMMAND",
		Short: `manage the PostgreSQL queue of [source] type = "postgres"`,
		Long: `Manages the PostgreSQL queue of a configuration whose [source] type is
"postgres" (docs/POSTGRES.md).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.SetOut(cmd.ErrOrStderr())
			_ = cmd.Usage()
			return service.Exit(service.ExitUsage)
		},
	}
	c.AddCommand(pgMigrateCommand())
	return c
}

func pgMigrateCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "migrate",
		Short: "create the queue's schema, or bring it up to date",
		Long: `Creates the schema of [source.postgres] (default "jobdaemon") with its
job table, indexes and functions in the database of the DSN, or brings
an older one up to date, in one transaction. Run it once, from any host,
before the first daemon starts, and after each upgrade of jobdaemon.
Running it again, or from several hosts at once, is harmless: it changes
nothing that is up to date. It needs the right to create a schema in the
database (the daemons do not).

Exit codes: 0 the schema is up to date, 1 the server could not be
reached or refused (the reason is printed), 4 the server refused the
credentials or the right to create the schema, 78 invalid configuration.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return service.Exit(pgMigrate(cmd))
		},
	}
}

func pgMigrate(cmd *cobra.Command) int {
	stderr := cmd.ErrOrStderr()
	// Only the source matters: a host that migrates need not have the
	// job's program or user.
	cfg, err := config.Parse(service.ConfigFile(cmd))
	if err == nil {
		err = cfg.CheckSource()
	}
	if err == nil && cfg.Source.Type != "postgres" {
		err = fmt.Errorf("%s: [source] type is %q: \"pg migrate\" is for type = \"postgres\"", cfg.Path(), cfg.Source.Type)
	}
	var dsn string
	if err == nil {
		dsn, err = cfg.PostgresDSN()
	}
	if err != nil {
		fmt.Fprintf(stderr, "jobdaemon: invalid configuration:\n%v\n", err)
		return service.ExitConfig
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	schema := cfg.Source.Postgres.Schema
	if err := pgqueue.MigrateDSN(ctx, dsn, schema); err != nil {
		fmt.Fprintf(stderr, "jobdaemon pg migrate: %v\n", pgAdvice(err, cfg))
		return migrateExitCode(err)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "jobdaemon pg migrate: schema %q is at version %d\n", schema, pgqueue.SchemaVersion)
	return service.ExitOK
}

// migrateExitCode follows the client commands: 4 for a refusal of this
// user, 1 for the rest.
func migrateExitCode(err error) int {
	var pe *pgconn.PgError
	if errors.Is(err, pgqueue.ErrAuth) || errors.As(err, &pe) && pe.Code == "42501" { // insufficient_privilege
		return service.ExitNoAccess
	}
	return service.ExitFailure
}
