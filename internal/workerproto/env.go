package workerproto

// The environment of a command worker, besides the job environment of the
// configuration. The worker's slot is fixed for its life; a job's id and
// attempt change with each job, so they are in its line, not here.
const (
	// EnvWorker is set to Version in a command worker's environment, so
	// that one script can serve as a worker and as a process per job.
	EnvWorker = "JOBDAEMON_WORKER"
	// Version is the protocol's version, the value of EnvWorker. A
	// change that an existing worker would misread gets a new version.
	Version = "1"
	// EnvSlot is set to the worker's slot, as for a process per job.
	EnvSlot = "JOB_SLOT"
)
