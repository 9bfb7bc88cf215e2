package jobs

import (
	"bytes"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// RecordTail is how much of a run's output a RunRecord keeps, in bytes.
const RecordTail = 4 << 10

// RunRecord is what a source records of a run that ended, in the JSON
// that the spool's result files and the PostgreSQL queue's result column
// share; each source embeds it in a record of its own, with what it alone
// knows (the job's file, the lease owner...). NewRunRecord fills it.
type RunRecord struct {
	// Outcome is Result.String: "ok", "exit 3", "signal SIGKILL",
	// "timeout", "error: ..."; a source may record others ("refused").
	Outcome string `json:"outcome"`
	// ExitCode is the exit status; -1 when a signal killed the job.
	ExitCode int `json:"exit_code"`
	// Signal is the name of the signal that killed the job ("SIGKILL"),
	// or "".
	Signal string `json:"signal"`
	// TimedOut is true when the job ran past its timeout.
	TimedOut bool `json:"timed_out"`
	// Duration, UserCPU and SysCPU are the job's wall and CPU time, in
	// seconds.
	Duration float64 `json:"duration_seconds"`
	UserCPU  float64 `json:"user_cpu_seconds"`
	SysCPU   float64 `json:"sys_cpu_seconds"`
	// MaxRSS is the job's peak resident set size in bytes.
	MaxRSS int64 `json:"max_rss_bytes"`
	// CPUFrom and MaxRSSFrom say what the figures cover: "cgroup" (the
	// job's whole process tree), "rusage" (its process and the children
	// it waited for), "worker" (the worker that ran it), or "not measured"
	// (the figure is 0). See Result.
	CPUFrom    string `json:"cpu_from,omitempty"`
	MaxRSSFrom string `json:"max_rss_from,omitempty"`
	// MemoryPeak and PidsPeak are the peaks of the job's cgroup; 0 when
	// not measured.
	MemoryPeak int64 `json:"memory_peak_bytes,omitempty"`
	PidsPeak   int64 `json:"pids_peak,omitempty"`
	// UsageOf says whose figures UserCPU, SysCPU and MaxRSS are
	// (Result.Usage): "job", the job's own; "worker", those of the command
	// worker that ran it and others before it, over its whole life (they
	// come with the last job a worker ran); "none", not measured (the
	// other jobs of a command worker).
	UsageOf string `json:"usage_of"`
	// Error is why the job failed beyond its exit status (Result.Error),
	// or "".
	Error string `json:"error"`
	// OutputTail is the end of what the job wrote to stdout and stderr, at
	// most RecordTail bytes, starting at a line if it was cut.
	OutputTail string `json:"output_tail"`
	// OutputTruncated is true when OutputTail is not the whole output the
	// source was given.
	OutputTruncated bool `json:"output_truncated"`
}

// NewRunRecord returns the record of the run that res describes. Its
// strings are valid UTF-8 without NUL (what neither JSON readers nor
// PostgreSQL's jsonb take is read as U+FFFD).
func NewRunRecord(res Result) RunRecord {
	r := RunRecord{
		Outcome:    recordText(res.String()),
		ExitCode:   res.ExitCode,
		TimedOut:   res.TimedOut,
		Duration:   res.Duration.Seconds(),
		UserCPU:    res.UserCPU.Seconds(),
		SysCPU:     res.SysCPU.Seconds(),
		MaxRSS:     res.MaxRSS,
		CPUFrom:    res.CPUFrom,
		MaxRSSFrom: res.MaxRSSFrom,
		MemoryPeak: res.MemoryPeak,
		PidsPeak:   res.PidsPeak,
		UsageOf:    res.Usage.String(),
		Error:      recordText(res.Error),
	}
	if res.Signal != 0 {
		if r.Signal = unix.SignalName(res.Signal); r.Signal == "" {
			r.Signal = "signal " + strconv.Itoa(int(res.Signal))
		}
	}
	out := res.Output
	if len(out) > RecordTail {
		out, r.OutputTruncated = out[len(out)-RecordTail:], true
		if i := bytes.IndexByte(out, '\n'); i >= 0 && i < len(out)-1 {
			out = out[i+1:]
		}
	}
	r.OutputTail = recordText(string(out))
	return r
}

// recordText makes s valid UTF-8 without NUL.
func recordText(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}
