// Command jobdaemon runs a command for every job file that lands in a spool
// directory, a few at a time, as a foreground service (systemd, containers,
// terminals) or as a batch run that exits when the queue is empty.
//
// Run "jobdaemon help" for the subcommands, and see config.toml at the root
// of the repository for every setting.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/jobdaemon/jobdaemon/pkg/lifecycle"
)

// Exit codes, shared by every subcommand. 78 follows sysexits.h
// (EX_CONFIG), which service managers and scripts recognise.
const (
	exitOK       = 0
	exitFailure  = 1  // the run ended, but a job failed (run --drain), or a command failed
	exitUsage    = 2  // bad flags or arguments
	exitConfig   = 78 // the configuration is invalid
	exitSoftware = 70 // an internal error
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

var commands []command

func init() {
	commands = []command{
		{"run", "run the daemon in the foreground (--drain: process the queue, then exit)", cmdRun},
		{"start", "start the daemon in the background (classic init)", cmdStart},
		{"stop", "stop the daemon and wait for it (--drain, --now, --no-wait)", cmdStop},
		{"restart", "stop the daemon, then start it in the background", cmdRestart},
		{"status", "show what the daemon is doing (--json)", cmdStatus},
		{"reload", "re-read the configuration, and wait until it is applied", cmdReload},
		{"scale", "change the pool's size: N, +N or -N", cmdScale},
		{"pause", "take no new job; running jobs go on", cmdPause},
		{"resume", "take jobs again", cmdResume},
		{"signal", "signal a running job's process group", cmdSignal},
		{"submit", "queue job files (or standard input)", cmdSubmit},
		{"check-config", "validate a config file and print the settings in effect", cmdCheckConfig},
		{"version", "print the version", cmdVersion},
	}
}

func main() {
	// In the intermediate process of "start", this starts the daemon and
	// exits; everywhere else it returns at once.
	lifecycle.ContinueDaemonize()
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	name := args[0]
	if name == "help" || name == "-h" || name == "--help" || name == "-help" {
		if len(args) > 1 {
			return dispatch([]string{args[1], "--help"}, stdout, stderr)
		}
		usage(stdout)
		return exitOK
	}
	for _, c := range commands {
		if c.name == name {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "jobdaemon: unknown command %q\n\n", name)
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprint(w, `jobdaemon runs a command for every job file that lands in a spool
directory, at most max_children at once, and moves each file to done/ or
failed/ with a JSON record of how it went.

Usage:
  jobdaemon <command> [flags]

Commands:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-13s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Every command takes --config FILE (default: ./config.toml, or
$JOBDAEMON_CONFIG). "jobdaemon <command> --help" tells more.

A first run, from a checkout of the repository:
  jobdaemon submit --config config.toml examples/samples/*
  jobdaemon run --config config.toml --drain

Exit codes: 0 success, 1 a job or the command failed, 2 bad usage,
3 no daemon is running, 4 permission denied (status: LSB codes, see its
--help), 78 invalid configuration.
`)
}

// newFlags returns a flag set whose --help prints help, the usage line and
// the flags.
func newFlags(name, usageLine, help string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: jobdaemon %s %s\n\n%s\n", name, usageLine, strings.TrimSpace(help))
		var any bool
		fs.VisitAll(func(*flag.Flag) { any = true })
		if any {
			fmt.Fprintln(fs.Output(), "\nFlags:")
			fs.PrintDefaults()
		}
	}
	return fs
}

// parseFlags parses args; it returns the exit code to use when parsing
// ended the command (--help goes to stdout and exits 0; a bad flag to
// stderr, exit 2), and -1 to carry on.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) int {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" {
			fs.SetOutput(stdout)
			fs.Usage()
			return exitOK
		}
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	return -1
}

// configFlag adds --config to fs.
func configFlag(fs *flag.FlagSet) *string {
	def := os.Getenv("JOBDAEMON_CONFIG")
	if def == "" {
		def = "config.toml"
	}
	return fs.String("config", def, "the configuration `file`")
}

func cmdVersion(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("version", "", "Prints the version of jobdaemon.", stderr)
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	fmt.Fprintln(stdout, "jobdaemon", version)
	return exitOK
}
