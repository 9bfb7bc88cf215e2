package pgqueue_test

import (
	"encoding/json"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
	"github.com/jobdaemon/jobdaemon/pkg/jobs/pgqueue"
)

// A password put into a DSN, in any of its forms, never survives Redact.
func FuzzRedact(f *testing.F) {
	f.Add("app", "s3cret", "db.example", "app")
	f.Add("u", "p@ss:w/rd", "/run/postgresql", "x")
	f.Add("user", "it's a 'quoted' one\\", "localhost", "db name")
	f.Add("", "only-pw", "", "")
	f.Fuzz(func(t *testing.T, user, password, host, db string) {
		// A password shorter than 4 bytes, or found elsewhere in the DSN,
		// cannot be told from the rest: only check the others.
		if len(password) < 4 || strings.Contains(user+host+db, password) ||
			strings.ContainsAny(password, "\x00") || !utf8.ValidString(password) {
			t.Skip()
		}
		dsns := func(pw string) []string {
			u := url.URL{Scheme: "postgres", User: url.UserPassword(user, pw), Host: "h", Path: "/" + db}
			quoted := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(pw)
			return []string{
				u.String(),
				"postgresql://" + url.PathEscape(user) + ":" + url.PathEscape(pw) + "@h/" + url.PathEscape(db),
				"postgres://h/" + url.PathEscape(db) + "?user=" + url.QueryEscape(user) + "&password=" + url.QueryEscape(pw),
				"host=" + host + " user=" + user + " password='" + quoted + "' dbname=" + db,
			}
		}
		// What Redact shows of the password, in any encoding, must be no
		// more than the same DSN with the password replaced shows by chance.
		baseline := dsns("xxxxx")
		forms := []string{password, url.PathEscape(password), url.QueryEscape(password),
			strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(password)}
		for i, dsn := range dsns(password) {
			r := pgqueue.Redact(dsn)
			for _, form := range forms {
				if len(form) >= 4 && strings.Count(r, form) > strings.Count(baseline[i], form) {
					t.Fatalf("Redact(%q) = %q shows the password %q", dsn, r, form)
				}
			}
		}
		if !strings.ContainsAny(password, " '\\\t\n\r\v\f") {
			dsn := "host=" + host + " password=" + password + " dbname=x"
			base := "host=" + host + " password=xxxxx dbname=x"
			if r := pgqueue.Redact(dsn); strings.Count(r, password) > strings.Count(base, password) {
				t.Fatalf("Redact(%q) = %q shows the password", dsn, r)
			}
		}
	})
}

// Whatever a job leaves in its Result, its Record is JSON that jsonb
// accepts (valid UTF-8, no NUL), with a bounded output tail, and reads
// back as written.
func FuzzRecord(f *testing.F) {
	f.Add(0, 0, "", []byte("done\n"), int64(1500))
	f.Add(3, 0, "boom", []byte("a\x00b\xffc"), int64(0))
	f.Add(-1, 9, "", []byte(strings.Repeat("line\n", 2000)), int64(-5))
	f.Add(1, 0, "bad \xc3\x28 utf8 \x00", []byte{}, int64(1<<40))
	f.Fuzz(func(t *testing.T, code, sig int, errText string, output []byte, ms int64) {
		res := jobs.Result{ExitCode: code, Signal: syscall.Signal(sig & 0x7f), Error: errText,
			Output: output, Duration: time.Duration(ms) * time.Millisecond}
		rec := pgqueue.NewRecord(res, 2, "host/boot/1/tag")
		b, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		if !utf8.Valid(b) || strings.Contains(string(b), `\u0000`) {
			t.Fatalf("record JSON not storable in jsonb: %s", b)
		}
		var back pgqueue.Record
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if back != rec {
			t.Fatalf("round trip: %+v != %+v", back, rec)
		}
		if len(rec.OutputTail) > 3*4096 || (len(output) <= 4096 && rec.OutputTruncated) {
			t.Fatalf("tail of %d bytes from %d, truncated %v", len(rec.OutputTail), len(output), rec.OutputTruncated)
		}
		if rec.Outcome != strings.ToValidUTF8(strings.ReplaceAll(res.String(), "\x00", "\uFFFD"), "\uFFFD") {
			t.Fatalf("outcome %q for %q", rec.Outcome, res.String())
		}
	})
}

// The names that go into the queue's SQL: a schema that CheckSchema
// accepts is a bare identifier (it is written into statements, and as a
// string literal for NOTIFY), and a queue name it accepts is text that
// PostgreSQL stores as given (valid UTF-8, printable, no NUL).
func FuzzNames(f *testing.F) {
	for _, s := range []string{"jobdaemon", "Jobs", "1x", "a'b", "x;DROP TABLE jobs", "", strings.Repeat("a", 64), "é", "q\x00", "mail queue"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if pgqueue.CheckSchema(name) == nil {
			if len(name) == 0 || len(name) > 63 || name[0] >= '0' && name[0] <= '9' ||
				strings.TrimLeft(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
				t.Fatalf("CheckSchema accepts %q", name)
			}
		}
		if pgqueue.CheckQueue(name) == nil {
			if name == "" || len(name) > 200 || !utf8.ValidString(name) || strings.ContainsRune(name, 0) ||
				strings.ContainsFunc(name, func(r rune) bool { return r < ' ' || r == 0x7f }) {
				t.Fatalf("CheckQueue accepts %q", name)
			}
		}
	})
}
