// Package config reads config.toml, the configuration of the jobdaemon
// binary: its schema (Config), its defaults (Default) and its validation
// (Load, Validate).
//
// Every key with its default; only [job] command is required:
//
//	[daemon]
//	pid_file = "/run/jobdaemon/jobdaemon.pid"  # "" writes none
//	user = ""              # drop to this user after start-up ("" = stay as started)
//	group = ""             # "" with user set: the user's primary group
//	stop_timeout = "30s"   # graceful stop: then SIGKILL
//	idle_interval = "2s"   # longest sleep when nothing is ready
//
//	[pool]
//	max_children = 4
//	jobs_per_child = 1     # worker mode: jobs per worker (default 1000; 0 = no limit)
//	worker_max_age = "0s"  # worker mode: replace older workers (0 = never)
//	worker_max_rss = "0"   # worker mode: replace larger workers (0 = never)
//	job_timeout = "0s"     # 0 = none
//	kill_grace = "10s"     # after the stop signal, before SIGKILL
//	stop_signal = "SIGTERM"
//	forward_signals = true # send stop_signal to jobs on a graceful stop
//
//	[job]
//	mode = "process"       # or "worker": a command worker per slot (docs/WORKER-PROTOCOL.md)
//	command = ["/usr/local/bin/thumbnail", "{path}", "{id}"]
//	working_dir = ""       # "" = the daemon's
//	env = { LANG = "C.UTF-8" }
//	inherit_env = []       # names of the daemon's variables passed to jobs
//	user = ""              # run jobs as this user, of their own ("" = the daemon's)
//	group = ""             # "" with user set: the user's primary group
//	max_attempts = 3
//	backoff = "10s"        # first retry delay; doubles, with jitter
//
//	[source]
//	type = "spool"         # or "postgres": a queue that several hosts share
//	[source.spool]
//	dir = "/var/spool/jobdaemon"
//	max_payload = "64MiB"  # larger job files are refused (worker mode: 32MiB, at most 47MiB)
//	rescan_interval = "2m"
//	keep_done = "720h"     # then a done job and its record are removed; "0s" keeps them
//	keep_failed = "0s"     # the same for failed/; 0: for ever
//	[source.postgres]      # exactly one of dsn, dsn_file, dsn_env
//	dsn = ""               # libpq connection string (URL or key=value)
//	dsn_file = ""          # a file holding it, 0600 (systemd: LoadCredential=)
//	dsn_env = ""           # the environment variable holding it
//	listen = true          # LISTEN for new jobs; false: poll only
//	listen_dsn = ""        # LISTEN through this DSN (PgBouncer: PostgreSQL itself)
//	schema = "jobdaemon"   # made by "jobdaemon pg migrate"
//	queue = "default"
//	lease_ttl = "60s"      # a dead host's jobs run elsewhere within it
//	poll_interval = "1s"
//	retention = "168h"     # completed rows kept; "0" keeps them
//	max_payload = "16MiB"  # at most 1GiB
//
//	[control]
//	socket = "/run/jobdaemon/control.sock"  # "" opens none
//
//	[log]
//	level = "info"         # the daemon's own verbosity: trace|debug|info|warn|error
//	job_output = "info"    # level given to job output lines
//	format = "auto"        # auto|text|json
//	joblog = ""            # one line per finished job, like GNU parallel's --joblog
//
// Relative paths (pid_file, state_dir, source.spool.dir, source.postgres.dsn_file,
// control.socket, log.joblog, job.working_dir, and a job.command[0] with a
// slash in it) are taken relative to the directory of the configuration
// file, not the working directory, so that a configuration means the same
// wherever the daemon is started from.
//
// The job command runs without a shell. Its arguments may be placeholders,
// each a whole argument: {path}, {name}, {id}, {slot}, {attempt}. There is
// no interpolation inside a string: "{path}.png" is refused, and a wrapper
// script builds such names. Each source type fills in its own, declared
// beside the list of types (Placeholders): {path} and {name} are the
// spool's job file; a postgres job is a row, whose payload is the
// command's standard input and whose id is {id}, so Validate refuses
// {path} and {name} there.
//
// The DSN of a postgres source is never in an error or in what the
// binary prints. Validate checks that exactly one of dsn, dsn_file and
// dsn_env is set; PostgresDSN reads it, once, checking a dsn_file's type,
// mode and owner before reading it (the daemon does so at start-up,
// before it drops its privileges). The [source] tables need a restart:
// none of their keys is tagged reload:"live".
// script builds such names. In worker mode the command starts once per
// slot and runs many jobs, so only {slot} is allowed.
//
// Worker mode has defaults of its own for the keys a file does not set:
// jobs_per_child 1000 (DefaultWorkerJobs) and max_payload 32MiB
// (DefaultWorkerPayload).
//
// Mistakes are reported as "file:line: key: what is wrong and the fix",
// as many at once as can be found: a TOML syntax error stops the reading;
// otherwise all unknown keys (each with a "did you mean") and all values of
// the wrong type are reported together, and if there are none, all that
// Validate refuses: values out of range, missing users, groups, directories
// and programs. The binary prints them and exits with ExitConfig (78).
package config
