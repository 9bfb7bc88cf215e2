package service

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
)

func TestDefaultsAreValid(t *testing.T) {
	st := Defaults("demo")
	if err := st.Validate(); err != nil {
		t.Fatalf("Defaults(demo).Validate: %v", err)
	}
	if st.Daemon.PIDFile != "/run/demo/demo.pid" || st.Control.Socket != "/run/demo/control.sock" {
		t.Errorf("paths of demo: %q, %q", st.Daemon.PIDFile, st.Control.Socket)
	}
}

// Every problem is reported at once, each as a *SettingError naming its
// key, and the message says what to write instead.
func TestValidateNamesEachKey(t *testing.T) {
	st := Defaults("demo")
	st.Daemon.PIDFile = "relative.pid"
	st.Daemon.User = "no-such-user-here"
	st.Daemon.StopTimeout = 0
	st.Pool.MaxChildren = 0
	st.Pool.JobTimeout = -time.Second
	st.Pool.StopSignal = 99
	st.Control.Socket = "/" + strings.Repeat("s", 200)
	st.Control.Group = "no-such-group-here"
	st.Log.Level = "loud"
	st.Log.Format = "xml"
	st.Log.Target = "file"
	st.Log.JobFacility = "nope"
	st.Log.JobIdentifier = "a b"
	err := st.Validate()
	want := map[string]string{
		"daemon.pid_file":     "is relative",
		"daemon.user":         "no user",
		"daemon.stop_timeout": "must be positive",
		"pool.max_children":   "use 1 to 10000",
		"pool.job_timeout":    "negative",
		"pool.stop_signal":    "is not a signal",
		"control.socket":      "at most 107",
		"control.group":       "no group",
		"log.level":           `unknown level "loud"`,
		"log.format":          `unknown format "xml"`,
		"log.file":            "needs log.file",
		"log.job_facility":    "unknown syslog facility",
		"log.job_identifier":  "no spaces",
	}
	got := map[string]string{}
	for _, e := range unjoinErrors(err) {
		var se *SettingError
		if !errors.As(e, &se) {
			t.Fatalf("not a *SettingError: %v", e)
		}
		if !strings.HasPrefix(se.Msg, se.Key+": ") {
			t.Errorf("message does not start with its key: %q", se.Msg)
		}
		got[se.Key] = se.Msg
	}
	for key, part := range want {
		if !strings.Contains(got[key], part) {
			t.Errorf("%s: %q, want it to contain %q", key, got[key], part)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d keys refused, want %d: %v", len(got), len(want), got)
	}
}

func unjoinErrors(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if err != nil {
		return []error{err}
	}
	return nil
}

func TestCredentialAndControlGroup(t *testing.T) {
	st := Defaults("demo")
	if c, err := st.Credential(); c != nil || err != nil {
		t.Errorf("no user: %+v, %v", c, err)
	}
	if g, err := st.ControlGid(); g != -1 || err != nil {
		t.Errorf("no user, no group: gid %d, %v", g, err)
	}
	st.Daemon.User, st.Daemon.Group = "root", "0"
	c, err := st.Credential()
	if err != nil || c.Uid != 0 || c.Gid != 0 {
		t.Errorf("root: %+v, %v", c, err)
	}
	if g, _ := st.ControlGid(); g != 0 {
		t.Errorf("the control group defaults to the daemon's: %d", g)
	}
	st.Daemon.User = ""
	if _, err := st.Credential(); err == nil || !strings.Contains(err.Error(), "without daemon.user") {
		t.Errorf("a group without a user: %v", err)
	}
}

func TestParseLevel(t *testing.T) {
	for in, want := range map[string]string{"trace": "DEBUG-4", "debug": "DEBUG", "INFO": "INFO", "warn": "WARN", "error": "ERROR"} {
		l, err := ParseLevel(in)
		if err != nil || l.String() != want {
			t.Errorf("ParseLevel(%q) = %v, %v; want %s", in, l, err, want)
		}
	}
	for _, in := range []string{"", "warning", "verbose"} {
		if _, err := ParseLevel(in); err == nil || !strings.Contains(err.Error(), `"trace", "debug"`) {
			t.Errorf("ParseLevel(%q) error = %v", in, err)
		}
	}
}

// change returns v changed to another value of its type that validation
// accepts.
func change(t *testing.T, key string, v reflect.Value) {
	switch {
	case v.Type() == reflect.TypeFor[time.Duration]():
		v.SetInt(v.Int() + int64(time.Second))
	case v.Type() == reflect.TypeFor[syscall.Signal]():
		v.SetInt(int64(syscall.SIGINT))
	case v.Kind() == reflect.Int || v.Kind() == reflect.Int64:
		v.SetInt(v.Int() + 1)
	case v.Kind() == reflect.Float64:
		v.SetFloat(v.Float() + 0.5)
	case v.Kind() == reflect.Bool:
		v.SetBool(!v.Bool())
	case v.Kind() == reflect.String && strings.HasPrefix(key, "log.level") || key == "log.job_output":
		v.SetString("debug")
	case v.Kind() == reflect.String:
		v.SetString(v.String() + "x")
	default:
		t.Fatalf("%s: no way to change a %s", key, v.Type())
	}
}

// field returns the field of st at the dotted key.
func field(st *Settings, key string) reflect.Value {
	v := reflect.ValueOf(st).Elem()
	for _, part := range strings.Split(key, ".") {
		t := v.Type()
		for i := range t.NumField() {
			if tomlName(t.Field(i)) == part {
				v = v.Field(i)
				break
			}
		}
	}
	return v
}

// The reload path and its warning come from one declaration, the reload
// tag: for each setting, a reload applies it and does not warn (live), or
// warns and keeps the old value (the rest). A live setting also reaches
// the daemon: its jobs.Options or the log levels.
func TestReloadFollowsTheDeclaration(t *testing.T) {
	live := LiveKeys(Settings{})
	var all []string
	var zero Settings
	eachSetting(reflect.ValueOf(&zero), reflect.ValueOf(&zero), "", func(key string, _ bool, _, _ reflect.Value) { all = append(all, key) })
	if len(live) == 0 || len(live) == len(all) {
		t.Fatalf("live %v of %v", live, all)
	}
	for _, key := range all {
		cur := Defaults("demo")
		var o jobs.Options
		setRuntimeOptions(&o, &cur)
		before := o
		ls := &logSetup{}
		if err := ls.setLevels(cur.Log.Level, cur.Log.JobOutput); err != nil {
			t.Fatal(err)
		}
		levels := [2]string{ls.level.Level().String(), ls.jobOutput.Level().String()}
		next := cur
		change(t, key, field(&next, key))
		keys, err := reloadSettings(&cur, next, &o, ls)
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		applied := reflect.DeepEqual(field(&cur, key).Interface(), field(&next, key).Interface())
		if slices.Contains(live, key) {
			reached := !reflect.DeepEqual(o, before) ||
				levels != [2]string{ls.level.Level().String(), ls.jobOutput.Level().String()}
			if !applied || len(keys) != 0 || !reached {
				t.Errorf("live %s: applied %v, warned %v, reached the daemon %v", key, applied, keys, reached)
			}
		} else if applied || !slices.Equal(keys, []string{key}) {
			t.Errorf("%s needs a restart: applied %v, warned %v", key, applied, keys)
		}
	}
}

// A size set at run time survives a reload that leaves the configured
// size alone, and yields to one that changes it.
func TestReloadKeepsARuntimeSize(t *testing.T) {
	cur := Defaults("demo")
	o := jobs.Options{MaxChildren: 9} // scaled at run time
	ls := &logSetup{}
	if _, err := reloadSettings(&cur, cur, &o, ls); err != nil || o.MaxChildren != 9 {
		t.Errorf("unchanged max_children: %d, %v", o.MaxChildren, err)
	}
	next := cur
	next.Pool.MaxChildren = 6
	if _, err := reloadSettings(&cur, next, &o, ls); err != nil || o.MaxChildren != 6 {
		t.Errorf("changed max_children: %d, %v", o.MaxChildren, err)
	}
}
