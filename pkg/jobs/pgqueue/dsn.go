package pgqueue

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrAuth is wrapped by the errors of Open and MigrateDSN when the server
// refused the credentials (wrong password, unknown user, no pg_hba.conf
// entry), which no retry can fix.
var ErrAuth = errors.New("authentication refused")

// Redact returns dsn with its password replaced by "xxxxx", in both
// forms a DSN takes: a URL (postgres://user:secret@host/db) and
// key=value pairs (password=secret or password='se cret'). A DSN that
// cannot be parsed is redacted as well as can be: everything between the
// first ':' after the scheme and the last '@' of a URL, and every
// password= value.
func Redact(dsn string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		return redactURL(dsn)
	}
	return redactKV(dsn)
}

func redactURL(dsn string) string {
	out := dsn
	if u, err := url.Parse(dsn); err == nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
			out = u.String()
		}
	} else {
		// Unparsable: cut what may be user:password@ by hand.
		scheme, rest, _ := strings.Cut(dsn, "://")
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			if colon := strings.Index(rest[:at], ":"); colon >= 0 {
				rest = rest[:colon] + ":xxxxx" + rest[at:]
			}
		}
		out = scheme + "://" + rest
	}
	// A password may also be a parameter (?password=...), anywhere.
	return queryPassword().ReplaceAllString(out, "${1}xxxxx")
}

var (
	queryPassword = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`(?i)([?&]password=)[^&#]*`) })
	// A key=value password: quoted with ' (where \' and \\ are escapes),
	// or up to the next space.
	kvPassword = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s]*)`) })
)

func redactKV(dsn string) string {
	return kvPassword().ReplaceAllString(dsn, "${1}xxxxx")
}

// parseDSN parses dsn for a pool. Its error never quotes a password.
func parseDSN(dsn string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx redacts its messages "as best it can"; quote none of it
		// that could hold a secret.
		return nil, fmt.Errorf("invalid DSN %s: %s", Redact(dsn), scrub(err.Error(), dsn))
	}
	return cfg, nil
}

// scrub removes from msg anything of dsn that may be a password.
func scrub(msg, dsn string) string {
	msg = strings.ReplaceAll(msg, dsn, Redact(dsn))
	for _, secret := range passwords(dsn) {
		if secret != "" {
			msg = strings.ReplaceAll(msg, secret, "xxxxx")
		}
	}
	return msg
}

// passwords returns what could be a password in dsn, in any of the ways
// Redact knows, and decoded.
func passwords(dsn string) []string {
	var out []string
	for _, m := range kvPassword().FindAllStringSubmatch(dsn, -1) {
		v := m[2]
		out = append(out, v, strings.Trim(v, "'"))
	}
	for _, m := range queryPassword().FindAllString(dsn, -1) {
		_, v, _ := strings.Cut(m, "=")
		out = append(out, v)
		if d, err := url.QueryUnescape(v); err == nil {
			out = append(out, d)
		}
	}
	if _, rest, ok := strings.Cut(dsn, "://"); ok {
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			if _, v, ok := strings.Cut(rest[:at], ":"); ok {
				out = append(out, v)
				if d, err := url.PathUnescape(v); err == nil {
					out = append(out, d)
				}
			}
		}
	}
	return out
}

// where names the server of cfg for messages: "host db.example:5432" or
// "socket /run/postgresql/.s.PGSQL.5432", with the database and user.
func where(cfg *pgx.ConnConfig) string {
	var sb strings.Builder
	if strings.HasPrefix(cfg.Host, "/") {
		fmt.Fprintf(&sb, "socket %s/.s.PGSQL.%d", cfg.Host, cfg.Port)
	} else {
		sb.WriteString("host " + cfg.Host + ":" + strconv.Itoa(int(cfg.Port)))
	}
	fmt.Fprintf(&sb, " (database %q, user %q)", cfg.Database, cfg.User)
	return sb.String()
}

// connectError says which server could not be reached and why, wrapping
// ErrAuth when the server refused the credentials.
func connectError(cfg *pgx.ConnConfig, err error) error {
	if isAuth(err) {
		return fmt.Errorf("connect to %s: %w: %w", where(cfg), ErrAuth, err)
	}
	return fmt.Errorf("connect to %s: %w", where(cfg), err)
}

// Connect connects to the database of dsn, trying once, for a short task
// such as enqueueing from a command line (Enqueue with the connection).
// Its errors name the server and the reason, wrap ErrAuth when the
// server refused the credentials, and never show the DSN's password.
func Connect(ctx context.Context, dsn string) (*pgx.Conn, error) {
	cfg, err := parseDSN(dsn)
	if err != nil {
		return nil, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return nil, connectError(cfg.ConnConfig, err)
	}
	return conn, nil
}

func isAuth(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	// 28000 invalid_authorization_specification (no pg_hba.conf entry,
	// role cannot log in), 28P01 invalid_password.
	return pe.Code == "28000" || pe.Code == "28P01"
}

// permanent reports whether err, from a connection attempt, will not go
// away by itself: refused credentials, a database that does not exist,
// a role without permission.
func permanent(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	switch pe.Code {
	case "28000", "28P01", // authentication
		"3D000", // invalid_catalog_name: no such database
		"42501": // insufficient_privilege
		return true
	}
	return false
}

// unavailable reports whether err means the database cannot be reached
// (or is shutting down, starting, or overloaded), as opposed to an SQL
// error that the server reported for a statement.
func unavailable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return true // no answer from the server: the network, a closed connection
	}
	switch {
	case strings.HasPrefix(pe.Code, "08"), // connection_exception
		pe.Code == "57P01", pe.Code == "57P02", pe.Code == "57P03", // shutdown, crash, starting up
		pe.Code == "53300": // too_many_connections
		return true
	}
	return false
}
