// Package metrics exposes a daemon's work as Prometheus metrics, for the
// control socket's GET /metrics.
//
// Counters of jobs come from a jobs.Observer (see Observe); gauges and the
// daemon's own counters are read from jobs.Status at each scrape.
package metrics

import (
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/jobdaemon/jobdaemon/pkg/jobs"
)

// Metrics holds the daemon's metrics. Its methods are safe for concurrent
// use.
type Metrics struct {
	reg       *prometheus.Registry
	started   prometheus.Counter
	succeeded prometheus.Counter
	failed    *prometheus.CounterVec
	completed prometheus.Counter
	retried   *prometheus.CounterVec
	gaveUp    prometheus.Counter
	duration  *prometheus.HistogramVec
	latency   prometheus.Histogram
	cpu       *prometheus.CounterVec
}

// New returns the metrics of a daemon whose status is read from status
// at each scrape; version goes into jobdaemon_build_info.
func New(status func() jobs.Status, version string) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		started: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jobdaemon_runs_started_total", Help: "Runs of jobs started: each attempt of each job.",
		}),
		succeeded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jobdaemon_runs_succeeded_total", Help: "Runs of jobs that ended well.",
		}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobdaemon_runs_failed_total",
			Help: "Runs of jobs that failed, by reason: exit, signal, timeout, error (could not start or run), interrupted (by a stop).",
		}, []string{"reason"}),
		completed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jobdaemon_jobs_completed_total", Help: "Jobs done: a run succeeded and the source filed them as done.",
		}),
		retried: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobdaemon_jobs_retried_total",
			Help: "Jobs queued again after a failed run, by the reason of the failure.",
		}, []string{"reason"}),
		gaveUp: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jobdaemon_jobs_failed_total", Help: "Jobs that failed for good: their last attempt failed.",
		}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "jobdaemon_run_duration_seconds",
			Help:    "Wall time of runs of jobs, by outcome (succeeded or failed).",
			Buckets: prometheus.ExponentialBuckets(0.005, 4, 12), // 5 ms to about 6 h
		}, []string{"outcome"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "jobdaemon_dispatch_latency_seconds",
			Help:    "Time from a free slot asking the source for a job to the child running it.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10), // 100 µs to 26 s
		}),
		cpu: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobdaemon_run_cpu_seconds_total",
			Help: "CPU time used by finished runs of jobs, by mode (user or system).",
		}, []string{"mode"}),
	}
	for _, r := range Reasons {
		m.failed.WithLabelValues(r)
		m.retried.WithLabelValues(r)
	}
	m.reg.MustRegister(m.started, m.succeeded, m.failed, m.completed, m.retried, m.gaveUp, m.duration, m.latency, m.cpu,
		&statusCollector{status: status},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "jobdaemon_build_info",
			Help:        "1, with the daemon's version and the Go version it was built with.",
			ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
		}, func() float64 { return 1 }),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// CountJobs adds the gauge jobdaemon_source_jobs{state}: the jobs of the
// source by state, as count returns them at each scrape. An error from
// count leaves the gauge out of that scrape. Call it once, before the
// first scrape.
func (m *Metrics) CountJobs(count func() (map[string]int64, error)) {
	m.reg.MustRegister(&countCollector{count: count})
}

// Handler serves the metrics in Prometheus's text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Reasons are the values of the reason label.
var Reasons = []string{"exit", "signal", "timeout", "error", "interrupted"}

// Reason names why res failed, one of Reasons; "" for a success.
func Reason(res jobs.Result) string {
	switch {
	case res.OK():
		return ""
	case res.Interrupted:
		return "interrupted"
	case res.TimedOut:
		return "timeout"
	case res.Signal != 0:
		return "signal"
	case res.Error != "":
		return "error"
	}
	return "exit"
}

// JobStarted counts a job and its dispatch latency; it implements
// jobs.Observer.
func (m *Metrics) JobStarted(_ *jobs.Job, wait time.Duration) {
	m.started.Inc()
	m.latency.Observe(wait.Seconds())
}

// JobFinished counts a job's outcome, duration and CPU time; it implements
// jobs.Observer.
func (m *Metrics) JobFinished(_ *jobs.Job, res jobs.Result, v jobs.Verdict) {
	outcome := "succeeded"
	if reason := Reason(res); reason != "" {
		outcome = "failed"
		m.failed.WithLabelValues(reason).Inc()
	} else {
		m.succeeded.Inc()
	}
	m.duration.WithLabelValues(outcome).Observe(res.Duration.Seconds())
	m.cpu.WithLabelValues("user").Add(res.UserCPU.Seconds())
	m.cpu.WithLabelValues("system").Add(res.SysCPU.Seconds())
	switch {
	case v == jobs.Completed, v == jobs.Unknown && res.OK():
		m.completed.Inc()
	case v == jobs.Retrying:
		m.retried.WithLabelValues(Reason(res)).Inc()
	case v == jobs.Failed:
		m.gaveUp.Inc()
	}
}

// statusCollector turns one jobs.Status per scrape into metrics.
type statusCollector struct {
	status func() jobs.Status
}

var (
	descRunning   = prometheus.NewDesc("jobdaemon_children_running", "Children running a job.", nil, nil)
	descMax       = prometheus.NewDesc("jobdaemon_children_max", "Most jobs that may run at once (max_children).", nil, nil)
	descSaturated = prometheus.NewDesc("jobdaemon_saturated_seconds_total", "Time spent with every slot busy.", nil, nil)
	descQueued    = prometheus.NewDesc("jobdaemon_queue_depth", "Jobs waiting in the source (absent when the source cannot tell).", nil, nil)
	descReloads   = prometheus.NewDesc("jobdaemon_reloads_total", "Reloads, by result (ok or failed).", []string{"result"}, nil)
	descGen       = prometheus.NewDesc("jobdaemon_config_generation", "Configurations loaded since start: 1, plus one per successful reload.", nil, nil)
	descUp        = prometheus.NewDesc("jobdaemon_up", "1 while the daemon takes jobs, 0 when paused or stopping.", nil, nil)
	descReloadOK  = prometheus.NewDesc("jobdaemon_config_last_reload_successful",
		"0 while the last reload was refused (the configuration in force is not the one on disk), else 1.", nil, nil)
	descOldest = prometheus.NewDesc("jobdaemon_queue_oldest_age_seconds",
		"How long the oldest job that is due has waited (absent when the source cannot tell).", nil, nil)
	descNotStart = prometheus.NewDesc("jobdaemon_job_start_failures_total",
		"Jobs that could not be started (fork or exec failed: descriptors, processes, memory, a missing program) and went back to their source unrun.", nil, nil)
	descBackoff = prometheus.NewDesc("jobdaemon_start_backoff_seconds",
		"Time left before the daemon starts a job again, after one could not be started; 0 when it starts jobs.", nil, nil)
)

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRunning, descMax, descSaturated, descQueued, descReloads, descGen, descUp, descReloadOK, descOldest, descNotStart, descBackoff} {
		ch <- d
	}
}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.status()
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	gauge(descRunning, float64(s.Busy))
	gauge(descMax, float64(s.MaxChildren))
	gauge(descGen, float64(s.Generation))
	up := 0.0
	if s.State == jobs.StateRunning {
		up = 1
	}
	gauge(descUp, up)
	if s.Queued >= 0 {
		gauge(descQueued, float64(s.Queued))
	}
	if s.OldestQueued >= 0 {
		gauge(descOldest, s.OldestQueued.Seconds())
	}
	ok := 1.0
	if s.LastReloadFailed {
		ok = 0
	}
	gauge(descReloadOK, ok)
	ch <- prometheus.MustNewConstMetric(descSaturated, prometheus.CounterValue, s.Saturated.Seconds())
	ch <- prometheus.MustNewConstMetric(descReloads, prometheus.CounterValue, float64(s.Reloads), "ok")
	ch <- prometheus.MustNewConstMetric(descReloads, prometheus.CounterValue, float64(s.ReloadsFailed), "failed")
	ch <- prometheus.MustNewConstMetric(descNotStart, prometheus.CounterValue, float64(s.NotStarted))
	gauge(descBackoff, s.StartBackoff.Seconds())
}

// countCollector turns the source's counts into one gauge per state.
type countCollector struct {
	count func() (map[string]int64, error)
}

var descSourceJobs = prometheus.NewDesc("jobdaemon_source_jobs",
	"Jobs in the source, by state, as the source counts them: for a queue that several daemons share, all of theirs.",
	[]string{"state"}, nil)

func (c *countCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descSourceJobs }

func (c *countCollector) Collect(ch chan<- prometheus.Metric) {
	counts, err := c.count()
	if err != nil {
		return
	}
	for state, n := range counts {
		ch <- prometheus.MustNewConstMetric(descSourceJobs, prometheus.GaugeValue, float64(n), state)
	}
}
