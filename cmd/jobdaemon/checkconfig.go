package main

import (
	"fmt"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/spf13/cobra"

	"github.com/jobdaemon/jobdaemon/pkg/service"
)

// timeout bounds a request to the daemon or the source: one that does
// not answer within a minute is stuck.
const timeout = time.Minute

func checkConfigCommand() *cobra.Command {
	var quiet bool
	c := &cobra.Command{
		Use:   "check-config [--quiet]",
		Short: "validate a config file and print the settings in effect",
		Long: `Loads the config file as "run" would: every unknown key, out-of-range
value, missing user or group, a command that does not exist or cannot be
executed, and a missing directory (of the PID file, the control socket,
the log file, the job log, the state directory, or one where the spool
cannot be made) is reported with the file, line and key. What only the
running daemon can know is not: whether a PostgreSQL server answers, and
whether the cgroup controllers that job limits need are there (the
daemon refuses to start without them). On success it prints
the settings in effect, defaults included and paths made absolute, with
the passwords of DSNs replaced by "xxxxx". A dsn_file or dsn_env is read,
as the daemon reads it at start-up.

Exits 0 when the file is valid, 78 when it is not.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := service.ConfigFile(cmd)
			cfg, err := readConfig(path)
			if err == nil {
				// As the daemon does at start: a dsn_file that is open
				// to others, or a dsn_env not set, is refused.
				err = readSecrets(cfg)
			}
			if err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "jobdaemon: invalid configuration:\n%v\n", err)
				return service.Exit(service.ExitConfig)
			}
			if quiet {
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "# %s is valid; the settings in effect:\n", path)
			if err := toml.NewEncoder(cmd.OutOrStdout()).Encode(printable(cfg)); err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "jobdaemon: print config: %v\n", err)
				return service.Exit(service.ExitSoftware)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&quiet, "quiet", false, "print nothing when the file is valid")
	return c
}
