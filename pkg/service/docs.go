//go:build jobdaemon_genman

package service

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// docsCommand writes the manual pages of the program, made from the same
// definitions as --help, for packages to install (hidden: it is for
// builds, not operators). Shell completion comes from the "completion"
// command, which cobra provides.
//
// It is only built with the tag jobdaemon_genman (packaging/build-deb.sh
// builds a generator so): the man page generator brings a Markdown parser
// and a YAML encoder whose package initialisation alone took 1.6 ms of
// every start of the CLI, and 60 KB of its resident set.
func (s *service) docsCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "gen-man DIR",
		Short:  "write the manual pages into DIR",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return Exit(s.printErr("gen-man", err))
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true
			hdr := &doc.GenManHeader{Title: s.name, Section: "8", Source: s.name + " " + s.opts.Version, Manual: "System Manager's Manual"}
			if err := doc.GenManTree(root, hdr, args[0]); err != nil {
				return Exit(s.printErr("gen-man", err))
			}
			return nil
		},
	}
}

func (s *service) printErr(name string, err error) int {
	fmt.Fprintf(s.stderr, "%s %s: %v\n", s.name, name, err)
	return ExitFailure
}
