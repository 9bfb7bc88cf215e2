package service

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// The command line: every command of the service, declared once, from
// which --help, the usage text and shell completion are made.

// execute runs the command line and returns the exit code.
func (s *service) execute() int {
	root := s.rootCommand()
	args := s.opts.Args
	if args == nil {
		args = os.Args[1:]
	}
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	var ee *ExitError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ee):
		return ee.Code
	}
	// A usage error: an unknown command or flag, or a wrong argument.
	fmt.Fprintf(s.stderr, "%s: %v\n", s.name, err)
	if cmd != nil {
		fmt.Fprintf(s.stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return ExitUsage
}

// usageTemplate is the help of every command: its usage line, its
// description, its flags.
const usageTemplate = `Usage: {{.UseLine}}
{{- if .HasAvailableSubCommands}}

Commands:
{{- range .Commands}}{{if (or .IsAvailableCommand (eq .Name "help"))}}
  {{rpad .Name .NamePadding }} {{.Short}}{{end}}{{end}}{{end}}
{{- if .HasAvailableLocalFlags}}

Flags:
{{.LocalFlags.FlagUsages | trimTrailingWhitespaces}}{{end}}
{{- if .HasAvailableInheritedFlags}}

Global flags:
{{.InheritedFlags.FlagUsages | trimTrailingWhitespaces}}{{end}}
`

const helpTemplate = `{{with (or .Long .Short)}}{{. | trimTrailingWhitespaces}}

{{end}}{{.UsageString}}`

// exitCodesHelp ends the help of the commands that talk to a daemon.
const exitCodesHelp = `
Exit codes: 0 done, 1 the daemon refused or failed, 2 bad usage, 3 no
daemon is running, 4 permission denied, 78 invalid configuration.`

func (s *service) rootCommand() *cobra.Command {
	summary := s.opts.Summary
	if summary == "" {
		summary = "runs jobs in child processes, at most max_children at once"
	}
	root := &cobra.Command{
		Use:     s.name,
		Short:   summary,
		Long:    s.name + " " + summary + ".",
		Version: s.opts.Version,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cmd.SetOut(s.stderr)
			_ = cmd.Usage()
			return Exit(ExitUsage)
		},
		SilenceErrors:     true,
		SilenceUsage:      true,
		CompletionOptions: cobra.CompletionOptions{HiddenDefaultCmd: true},
	}
	root.SetOut(s.stdout)
	root.SetErr(s.stderr)
	root.SetUsageTemplate(usageTemplate)
	root.SetHelpTemplate(helpTemplate)
	root.SetVersionTemplate(s.name + " {{.Version}}\n")
	root.PersistentFlags().String("config", s.defaultConfigFile(), "the configuration `file`")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return err })
	root.AddCommand(
		s.runCommand(),
		s.startCommand(),
		s.stopCommand(),
		s.restartCommand(),
		s.statusCommand(),
		s.reloadCommand(),
		s.scaleCommand(),
		s.pauseResumeCommand("pause", "take no new job; running jobs go on",
			"Makes the daemon take no new job; running jobs go on. resume undoes it."),
		s.pauseResumeCommand("resume", "take jobs again", "Makes a paused daemon take jobs again."),
		s.signalCommand(),
		s.versionCommand(),
	)
	if gen := s.docsCommand(); gen != nil {
		root.AddCommand(gen)
	}
	root.AddCommand(s.opts.Commands...)
	return root
}

// ConfigFile returns the --config of the command line that cmd, one of
// Options.Commands, runs in.
func ConfigFile(cmd *cobra.Command) string {
	if f := cmd.Flags().Lookup("config"); f != nil {
		return f.Value.String()
	}
	return ""
}

func (s *service) runCommand() *cobra.Command {
	var drain bool
	c := &cobra.Command{
		Use:   "run [--drain]",
		Short: "run the daemon in the foreground (--drain: process the queue, then exit)",
		Long: `Runs the daemon in the foreground until it is stopped: the mode for systemd
(Type=notify), containers and terminals.

With --drain it processes what is queued, retries included, and exits: 0
when every job succeeded, 1 when at least one failed for good. On a
terminal it shows a progress bar; otherwise it logs a progress line every
few seconds.

Signals: TERM or INT stop gracefully (a second one kills the jobs), QUIT
drains, HUP reloads the configuration, USR1 reopens the log file, USR2
and CONT pause and resume, TTIN and TTOU add or remove a child slot.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return Exit(s.runDaemon(ConfigFile(cmd), drain))
		},
	}
	c.Flags().BoolVar(&drain, "drain", false, "process the queue, then exit (1 if a job failed)")
	return c
}

func (s *service) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "print the version",
		Long:  "Prints the version of " + s.name + ".",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(s.stdout, s.name, s.opts.Version)
			return nil
		},
	}
}

func (s *service) startCommand() *cobra.Command {
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "start [--timeout D]",
		Short: "start the daemon in the background (classic init)",
		Long: `Starts the daemon in the background, the classic way (init scripts, hosts
without systemd): it forks twice, leaves the terminal and the session,
takes the PID file (daemon.pid_file), opens the control socket, drops to
daemon.user, and logs to syslog (facility "daemon") unless log.target says
otherwise. "start" returns only when the daemon is ready:

  NAME started (pid N)          exit 0
  the reason it could not       exit 1, or 78 for an invalid configuration

A daemon already running on this configuration is reported as "already
running (pid N)", exit 1. Under systemd, use "run" in the unit instead.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return Exit(s.start(ConfigFile(cmd), timeout))
		},
	}
	c.Long = strings.ReplaceAll(c.Long, "NAME", s.name)
	c.Flags().DurationVar(&timeout, "timeout", time.Minute, "how long to wait for the daemon to be ready")
	return c
}

func (s *service) stopCommand() *cobra.Command {
	var drain, now, noWait bool
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "stop [--drain|--now] [--no-wait] [--timeout D]",
		Short: "stop the daemon and wait for it (--drain, --now, --no-wait)",
		Long: `Stops the daemon and waits until it has exited, then says how it went:
gracefully by default (running jobs get pool.stop_signal and are killed
after daemon.stop_timeout), with --drain after the running jobs finish
(none is started), with --now at once (SIGKILL). --timeout bounds the
wait: exit 1 if the daemon still runs then (the stop goes on). --no-wait
returns as soon as the stop has begun. (--wait, the default, is accepted
for scripts that say so.)` + exitCodesHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if drain && now {
				fmt.Fprintf(s.stderr, "%s stop: --drain and --now are opposites: give one\n", s.name)
				return Exit(ExitUsage)
			}
			mode := "graceful"
			if drain {
				mode = "drain"
			} else if now {
				mode = "immediate"
			}
			cl, code := s.dial(cmd, "stop")
			if cl == nil {
				return Exit(code)
			}
			return Exit(s.stopDaemon(cl, mode, !noWait, timeout))
		},
	}
	f := c.Flags()
	f.BoolVar(&drain, "drain", false, "let the running jobs finish")
	f.BoolVar(&now, "now", false, "kill the running jobs at once")
	f.Bool("wait", true, "wait until the daemon has exited (the default)")
	f.BoolVar(&noWait, "no-wait", false, "return once the stop has begun")
	f.DurationVar(&timeout, "timeout", 0, "give up waiting after this `duration` (0: no limit)")
	return c
}

func (s *service) restartCommand() *cobra.Command {
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "restart [--timeout D]",
		Short: "stop the daemon, then start it in the background",
		Long: `Stops the daemon gracefully, waits until it has exited, and starts it
again in the background, as "stop" then "start" would. With no daemon
running, it just starts one. For a daemon under systemd, use "systemctl
restart" instead.` + exitCodesHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return Exit(s.restart(cmd, timeout))
		},
	}
	c.Flags().DurationVar(&timeout, "timeout", 0, "give up waiting for the stop after this `duration` (0: no limit)")
	return c
}

func (s *service) statusCommand() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "status [--json]",
		Short: "show what the daemon is doing (--json)",
		Long: `Shows what the daemon is doing: its state, the pool, every running job with
its process, runtime, CPU time and memory, and the counters. --json prints
the control socket's answer as it is.

The exit code follows the LSB rules for init scripts: 0 running, 1 not
running but the PID file remains, 3 not running, 4 unknown (permission
denied, or an error).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return Exit(s.status(cmd, asJSON))
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func (s *service) reloadCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "reload",
		Short: "re-read the configuration, and wait until it is applied",
		Long: `Makes the daemon read its configuration again, and waits until it has: the
pool size, timeouts, stop signal and log levels, and what the application
reloads itself, apply to the next jobs. A configuration with an error is
refused: the daemon runs on with the old one, and this command prints the
error and exits 1. This is systemd's ExecReload=.` + exitCodesHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return Exit(s.reload(cmd)) },
	}
}

func (s *service) scaleCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "scale N|+N|-N",
		Short: "change the pool's size: N, +N or -N",
		Long: `Changes how many jobs run at once: N sets it, +N and -N change it. Fewer
slots stop no running job: the slots above the new size are not refilled.` + exitCodesHelp,
		// "-1" would be taken for a flag: the flags are parsed here, after
		// the number is cut off.
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return s.scale(cmd, args)
		},
	}
}

func (s *service) pauseResumeCommand(name, short, long string) *cobra.Command {
	return &cobra.Command{
		Use:   name,
		Short: short,
		Long:  long + "\n" + exitCodesHelp,
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return Exit(s.pauseResume(cmd, name)) },
	}
}

func (s *service) signalCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "signal JOB [SIG]",
		Short: "signal a running job's process group",
		Long: `Sends a signal to the process group of a running job: the job's process
and everything it started. SIG is a name (TERM, SIGUSR1) or a number;
the default is TERM. "status" lists the running jobs.` + exitCodesHelp,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error { return Exit(s.signal(cmd, args)) },
	}
}

// parseScaleArgs cuts the size off args, which cobra has not parsed, and
// parses the flags that are left.
func parseScaleArgs(cmd *cobra.Command, args []string) (string, error) {
	var num string
	rest := args[:0:0]
	for _, a := range args {
		if num == "" && len(a) > 0 && (a[0] == '-' || a[0] == '+') && len(a) > 1 && isDigits(a[1:]) || num == "" && isDigits(a) {
			num = a
			continue
		}
		rest = append(rest, a)
	}
	fs := cmd.Flags()
	fs.AddFlagSet(cmd.InheritedFlags())
	if err := fs.Parse(rest); err != nil {
		return "", err
	}
	if help, _ := fs.GetBool("help"); help {
		return "", pflag.ErrHelp
	}
	if fs.NArg() > 0 {
		return "", fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if num == "" {
		return "", errors.New("give one number: N, +N or -N")
	}
	return num, nil
}

func isDigits(s string) bool { return s != "" && strings.Trim(s, "0123456789") == "" }
