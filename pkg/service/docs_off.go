//go:build !jobdaemon_genman

package service

import "github.com/spf13/cobra"

// docsCommand is nil: gen-man is built only with the tag jobdaemon_genman
// (see docs.go).
func (s *service) docsCommand() *cobra.Command { return nil }
