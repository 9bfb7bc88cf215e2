// Command jobdaemon runs a command for every job of a queue, a few at a
// time: the files that land in a spool directory (the default), or the
// rows of a PostgreSQL queue that daemons on several hosts share, as a
// foreground service (systemd, containers, terminals), a classic daemon,
// or a batch run that exits when the queue is empty.
//
// It is package service driven by config.toml: "jobdaemon help" lists
// the commands, and config.toml at the root of the repository shows every
// setting. Every command reads --config, by default $JOBDAEMON_CONFIG or
// else /etc/jobdaemon/config.toml, the file the Debian package installs.
package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/jobdaemon/jobdaemon/pkg/service"
)

// version is set at build time with -ldflags "-X main.version=..."; ""
// takes the module's version from the build information.
var version = ""

// atExit runs before the process exits (see profile.go).
var atExit = func() {}

func main() {
	code := service.Main(newApp(), service.Options{
		Name:     "jobdaemon",
		Version:  version,
		Summary:  "runs a command for every job of a queue, at most max_children at once",
		Commands: append([]*cobra.Command{submitCommand(), checkConfigCommand()}, sourceCommands()...),
	})
	atExit()
	os.Exit(code)
}
