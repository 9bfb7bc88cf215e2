// Package pgtest starts throwaway PostgreSQL servers for tests and
// benchmarks, from the binaries of the Debian packages
// (/usr/lib/postgresql/VERSION/bin), in a temporary directory, reachable
// only through a Unix socket (listen_addresses is empty).
//
// As root, initdb and postgres run as the user postgres (initdb refuses
// root), through SysProcAttr.Credential; the temporary directory is handed
// to that user. Otherwise they run as the calling user.
//
// A test package shares one server and gives each test a database of its
// own:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
//	func TestX(t *testing.T) {
//		dsn := pgtest.NewDB(t) // a fresh database, dropped after the test
//		...
//	}
//
// A test that must restart or stop its server starts a private one with
// New. Without the binaries, these helpers skip the test, except under
// CI=true, where they fail it. The servers run with fsync off: they are
// for tests, and a crash of the machine loses them anyway.
package pgtest
