// Command reexecfloor is bench/reexec with children that do what any child
// of the library must before it can take a job, and nothing else: it links
// pkg/jobs (whose packages, log/slog among them, initialise in every
// child), and it catches SIGTERM into a context (signal.NotifyContext),
// the guarantee that a job the daemon stops gets to clean up (pkg/jobs'
// child catches the daemon's stop signal as well, SIGTERM unless set
// otherwise, as here). The gap between this and bench/reexec is that
// price; the gap between `library -mode reexec` and this is the
// dispatcher's own work per job (the channel, the job and its result, the
// accounting, in the parent and in the child).
//
// Usage and output: as bench/reexec.
package main

import (
	"context"
	"os/signal"
	"syscall"

	"github.com/jobdaemon/jobdaemon/bench/internal/reexecloop"
	_ "github.com/jobdaemon/jobdaemon/pkg/jobs" // its packages' initialisers, as in every child
)

func main() {
	reexecloop.Main(func() {
		// As pkg/jobs' child does before its first job. Not stopped: that
		// child leaves through os.Exit, which runs no deferred stop.
		_, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		_ = stop
	})
}
