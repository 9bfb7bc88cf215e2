package pool

import (
	"regexp"
	"testing"
)

// The two name checks are loops, not regular expressions (so that the
// package does not initialise regexp in every program and re-executed
// child); they must accept exactly what the expressions they replace do.
var (
	validCgroupExpr = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.@:-]*$`)
	jobCgroupExpr   = regexp.MustCompile(`^((job|slot)-[0-9]+(-[0-9]+)?|probe-[0-9]+)$`)
)

func TestNameChecksMatchTheirExpressions(t *testing.T) {
	valid, job := validCgroupExpr, jobCgroupExpr
	names := []string{
		"", "jobs", "Jobs_2", "_x", "a.b@c:d-e", ".hidden", "-dash", "@at", ":colon", "a/b", "a b", "é", "a\x00",
		"job-1", "job-12-3", "job-", "job--1", "job-1-", "job-1-2-3", "job-a", "slot-0", "slot-7-42", "slot-x",
		"probe-9", "probe-", "probe-1-2", "jobs-1", "job-1\n", "xjob-1", "JOB-1", "0", "job-١",
	}
	for _, n := range names {
		if got, want := validCgroupName(n), valid.MatchString(n); got != want {
			t.Errorf("validCgroupName(%q) = %v, the expression says %v", n, got, want)
		}
		if got, want := jobCgroupName(n), job.MatchString(n); got != want {
			t.Errorf("jobCgroupName(%q) = %v, the expression says %v", n, got, want)
		}
	}
}

func FuzzNameChecks(f *testing.F) {
	valid, job := validCgroupExpr, jobCgroupExpr
	for _, s := range []string{"job-1-2", "slot-3", "probe-4", "a.b", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, n string) {
		if validCgroupName(n) != valid.MatchString(n) || jobCgroupName(n) != job.MatchString(n) {
			t.Errorf("%q: validCgroupName %v (expression %v), jobCgroupName %v (expression %v)",
				n, validCgroupName(n), valid.MatchString(n), jobCgroupName(n), job.MatchString(n))
		}
	})
}
