package config

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"syscall"

	"github.com/jobdaemon/jobdaemon/pkg/jobs/pgqueue"
)

// sourceType is a value of source.type, with what differs between the
// sources in config.toml: the placeholders of job.command that its jobs
// fill in, and what to tell someone who uses another.
type sourceType struct {
	name         string
	placeholders []string
	// instead explains, for a placeholder this source does not fill in,
	// how its jobs reach the command.
	instead string
}

// sourceTypes are the job sources, the default first.
var sourceTypes = []sourceType{
	{name: "spool", placeholders: []string{PlaceholderPath, PlaceholderName, PlaceholderID, PlaceholderSlot, PlaceholderAttempt}},
	{name: "postgres", placeholders: []string{PlaceholderID, PlaceholderSlot, PlaceholderAttempt},
		instead: "a postgres job is a row, not a file: its payload is the command's standard input, and {id} (also $JOB_ID) is its row id"},
}

// SourceTypes returns the values source.type may take, the default first.
func SourceTypes() []string {
	names := make([]string, len(sourceTypes))
	for i, st := range sourceTypes {
		names[i] = st.name
	}
	return names
}

// Placeholders returns the placeholders of job.command that the jobs of
// source type typ fill in; nil for an unknown type.
func Placeholders(typ string) []string {
	for _, st := range sourceTypes {
		if st.name == typ {
			return slices.Clone(st.placeholders)
		}
	}
	return nil
}

// Postgres is the [source.postgres] table: a queue table in PostgreSQL
// (package pgqueue), which daemons on several hosts share. Its settings
// need a restart.
type Postgres struct {
	// DSN is the libpq connection string, a URL or key=value pairs.
	// Exactly one of DSN, DSNFile and DSNEnv is set. The password may be
	// in it, or come from PGPASSWORD or ~/.pgpass (passfile=); it is never
	// logged or printed.
	DSN string `toml:"dsn"`
	// DSNFile is a file that holds the DSN, such as a systemd credential
	// (LoadCredential=): a regular file that no other user may read and
	// only its owner (root or the reading user) may write. It is read at
	// start-up, before the daemon drops its privileges.
	DSNFile string `toml:"dsn_file"`
	// DSNEnv names the environment variable that holds the DSN (such as
	// DATABASE_URL); jobs never see it unless inherit_env names it, which
	// is refused.
	DSNEnv string `toml:"dsn_env"`
	// ListenDSN, if set, is the connection used to LISTEN for new jobs,
	// instead of the DSN's: behind a PgBouncer in transaction mode, point
	// it at PostgreSQL itself. Printed without its password.
	ListenDSN string `toml:"listen_dsn"`
	// Listen, if false, opens no LISTEN connection: new jobs are found by
	// polling only, every PollInterval (default true).
	Listen bool `toml:"listen"`
	// Schema holds the queue table (default "jobdaemon"), which
	// "jobdaemon pg migrate" creates.
	Schema string `toml:"schema"`
	// Queue is the queue this daemon takes jobs from and submits to
	// (default "default").
	Queue string `toml:"queue"`
	// LeaseTTL is how long a claimed job stays leased without renewal; the
	// jobs of a daemon that died run elsewhere within it (default 60s,
	// minimum 1s).
	LeaseTTL Duration `toml:"lease_ttl"`
	// PollInterval is how often the queue looks for jobs that no NOTIFY
	// announced (default 1s).
	PollInterval Duration `toml:"poll_interval"`
	// Retention is how long completed jobs are kept (default 168h); 0
	// keeps them for ever. Failed jobs are never deleted.
	Retention Duration `toml:"retention"`
	// MaxPayload is the largest payload run or submitted (default 16MiB,
	// at most 1GiB, PostgreSQL's largest bytea).
	MaxPayload Size `toml:"max_payload"`
}

// defaultPostgres is the [source.postgres] table of an empty file.
func defaultPostgres() Postgres {
	return Postgres{
		Listen:       true,
		Schema:       pgqueue.DefaultSchema,
		Queue:        pgqueue.DefaultQueue,
		LeaseTTL:     Duration(pgqueue.DefaultLeaseTTL),
		PollInterval: Duration(pgqueue.DefaultPollInterval),
		Retention:    Duration(pgqueue.DefaultRetention),
		MaxPayload:   pgqueue.DefaultMaxPayload,
	}
}

// maxPgPayload is PostgreSQL's largest bytea value.
const maxPgPayload = 1 << 30

// CheckSource validates the [source] tables and the placeholders of
// job.command against the source type, as Validate does, and nothing
// else: for commands that only queue jobs ("submit", "pg migrate"), which
// must work where the job's program or user do not exist.
func (c *Config) CheckSource() error {
	v := &validator{problems{file: c.file, idx: c.idx}}
	v.source(c)
	return v.err()
}

// source checks the [source] tables, and the placeholders of job.command
// against the source type.
func (v *validator) source(c *Config) {
	switch c.Source.Type {
	case "spool":
		s := &c.Source.Spool
		v.path("source.spool.dir", s.Dir, false)
		if s.MaxPayload <= 0 {
			v.fail("source.spool.max_payload", nil, "must be positive, such as \"64MiB\"")
		}
		v.positive("source.spool.rescan_interval", s.RescanInterval, "2m")
		v.nonNegative("source.spool.keep_done", s.KeepDone)
		v.nonNegative("source.spool.keep_failed", s.KeepFailed)
	case "postgres":
		v.postgres(c)
	default:
		v.fail("source.type", nil, "unknown source %q: use %s", c.Source.Type, quoteList(SourceTypes()))
		return
	}
	v.placeholders(c)
}

func (v *validator) postgres(c *Config) {
	p := &c.Source.Postgres
	var set []string
	for _, k := range []struct{ key, val string }{{"dsn", p.DSN}, {"dsn_file", p.DSNFile}, {"dsn_env", p.DSNEnv}} {
		if k.val != "" {
			set = append(set, k.key)
		}
	}
	switch {
	case len(set) == 0:
		v.fail("source.type", nil, "\"postgres\" needs the database: set one of dsn, dsn_file or dsn_env in [source.postgres]")
	case len(set) > 1:
		for _, k := range set[1:] {
			v.fail("source.postgres."+k, nil, "%s is set too: set exactly one of dsn, dsn_file and dsn_env", set[0])
		}
	}
	v.path("source.postgres.dsn_file", p.DSNFile, true)
	if p.DSNEnv != "" {
		const key = "source.postgres.dsn_env"
		if msg := envNameError(p.DSNEnv); msg != "" {
			v.fail(key, nil, "%s", msg)
		}
		if slices.Contains(c.Job.InheritEnv, p.DSNEnv) {
			v.fail(key, nil, "%s is also in job.inherit_env, which would hand the database's password to every job: remove it there", p.DSNEnv)
		}
	}
	if p.ListenDSN != "" && !p.Listen {
		v.fail("source.postgres.listen_dsn", nil, "is set, but listen = false opens no LISTEN connection: remove one of them")
	}
	if err := pgqueue.CheckSchema(p.Schema); err != nil {
		v.fail("source.postgres.schema", nil, "%q: use 1 to 63 lower-case letters, digits and _, not starting with a digit", p.Schema)
	}
	if err := pgqueue.CheckQueue(p.Queue); err != nil {
		v.fail("source.postgres.queue", nil, "%q: use 1 to 200 bytes of printable UTF-8", p.Queue)
	}
	if p.LeaseTTL < Duration(pgqueue.MinLeaseTTL) {
		v.fail("source.postgres.lease_ttl", nil, "%v is under the minimum of %v: a crashed host's jobs come back within it, and it is renewed every third of it", p.LeaseTTL, pgqueue.MinLeaseTTL)
	}
	v.positive("source.postgres.poll_interval", p.PollInterval, "1s")
	v.nonNegative("source.postgres.retention", p.Retention)
	if p.MaxPayload <= 0 || p.MaxPayload > maxPgPayload {
		v.fail("source.postgres.max_payload", nil, "%v is out of range: use 1B to 1GiB (PostgreSQL's largest bytea), such as \"16MiB\"", p.MaxPayload)
	}
}

// placeholders refuses the placeholders of job.command that the source
// does not fill in.
func (v *validator) placeholders(c *Config) {
	st := sourceTypes[slices.IndexFunc(sourceTypes, func(st sourceType) bool { return st.name == c.Source.Type })]
	for i, arg := range c.Job.Command {
		if i == 0 || !slices.Contains(placeholders, arg) {
			continue
		}
		if !slices.Contains(st.placeholders, arg) {
			v.fail("job.command", nil, "argument %d %s is not filled in with source.type = %q, whose placeholders are %s; %s",
				i, arg, st.name, strings.Join(st.placeholders, ", "), st.instead)
		} else if arg == PlaceholderPath && c.Job.User != "" {
			v.fail("job.command", nil, "argument %d %s: jobs run as job.user %q, who cannot open the spool's files (running/ is the daemon's alone); "+
				"the job gets its file on standard input, which it may read and seek as the file itself: remove %s and read standard input "+
				"(a program that wants a path can copy it first, or take %s for its name)", i, arg, c.Job.User, arg, PlaceholderName)
		}
	}
}

func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}

// maxDSNFile bounds what is read of a DSN file: a DSN is a line.
const maxDSNFile = 64 << 10

// PostgresDSN returns the DSN of [source.postgres]: dsn itself, the
// content of dsn_file, or the value of the variable dsn_env names. The
// first call reads it and later calls return the same, so that a daemon
// reads a file only root may read before it drops its privileges, and
// opens its source with it after.
//
// A dsn_file must be a regular file of at most 64 KiB that no other user
// may read, and that only its owner, root or this process's user, may
// write (mode 0600, 0400, or 0640 with the daemon's group): one that
// anybody may read has given its password away, and one that another
// user may change may send the daemon to a server of theirs. Its content
// is trimmed of surrounding white space.
//
// The error is an *Error naming the key and its line; it never shows the
// DSN.
func (c *Config) PostgresDSN() (string, error) {
	if c.pgDSN != "" {
		return c.pgDSN, nil
	}
	p := &c.Source.Postgres
	fail := func(key, format string, args ...any) error {
		pr := &problems{file: c.file, idx: c.idx}
		pr.add(&Error{Key: key, Msg: key + ": " + fmt.Sprintf(format, args...)})
		return pr.err()
	}
	var dsn string
	switch {
	case p.DSN != "":
		dsn = p.DSN
	case p.DSNFile != "":
		var err error
		if dsn, err = readDSNFile(p.DSNFile); err != nil {
			return "", fail("source.postgres.dsn_file", "%v", err)
		}
	case p.DSNEnv != "":
		dsn = strings.TrimSpace(os.Getenv(p.DSNEnv))
		if dsn == "" {
			return "", fail("source.postgres.dsn_env", "the environment variable %s is not set, or empty: it must hold the DSN", p.DSNEnv)
		}
	default:
		return "", fail("source.type", "\"postgres\" needs the database: set one of dsn, dsn_file or dsn_env in [source.postgres]")
	}
	c.pgDSN = dsn
	return dsn, nil
}

// readDSNFile reads a DSN file after checking, on the open file, that
// nobody else can read or change it.
func readDSNFile(path string) (string, error) {
	// Not through a link: a link planted there would make the daemon,
	// root at that moment, read a file of someone else's choosing.
	f, err := openRegular(path, false)
	if err != nil {
		return "", unwrapPath(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("%q: %w", path, err)
	}
	mode := fi.Mode()
	st, _ := fi.Sys().(*syscall.Stat_t)
	switch {
	case mode.Perm()&0o007 != 0:
		return "", fmt.Errorf("%q is open to other users (mode %04o): it holds the database's password; chmod o= it (0600, or 0640 with the daemon's group)", path, mode.Perm())
	case mode.Perm()&0o020 != 0:
		return "", fmt.Errorf("%q may be changed by its group (mode %04o): chmod g-w it", path, mode.Perm())
	case st != nil && st.Uid != 0 && int(st.Uid) != os.Geteuid():
		return "", fmt.Errorf("%q belongs to uid %d, neither root nor this process's user (uid %d), who could change the server it names: chown it", path, st.Uid, os.Geteuid())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxDSNFile+1))
	if err != nil {
		return "", fmt.Errorf("%q: %w", path, err)
	}
	if len(data) > maxDSNFile {
		return "", fmt.Errorf("%q is larger than %v: is it the DSN?", path, Size(maxDSNFile))
	}
	if bytes.ContainsRune(data, 0) {
		return "", fmt.Errorf("%q contains a NUL byte: is it the DSN?", path)
	}
	dsn := strings.TrimSpace(string(data))
	if dsn == "" {
		return "", fmt.Errorf("%q is empty: write the DSN into it", path)
	}
	return dsn, nil
}

// Path returns the configuration file's path, as given to Load or Parse;
// "" for a Config that did not come from a file.
func (c *Config) Path() string { return c.file }
