// Package metrics exposes a daemon's work as Prometheus metrics, for the
// control socket's GET /metrics.
//
// Counters of jobs come from a jobs.Observer (see Observe); gauges and the
// daemon's own counters are read from jobs.Status at each scrape.
package metrics

import (
	"net/http"
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
	retried   *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	latency   prometheus.Histogram
	cpu       *prometheus.CounterVec
}

// New returns the metrics of a daemon whose status is read from status
// at each scrape.
func New(status func() jobs.Status) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		started: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jobdaemon_jobs_started_total", Help: "Jobs started.",
		}),
		succeeded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jobdaemon_jobs_succeeded_total", Help: "Jobs that ended well.",
		}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobdaemon_jobs_failed_total",
			Help: "Runs of jobs that failed, by reason: exit, signal, timeout, error (could not start or run), interrupted (by a stop).",
		}, []string{"reason"}),
		retried: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobdaemon_jobs_retried_total",
			Help: "Failed runs that the source queued again, by the reason of the failure.",
		}, []string{"reason"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "jobdaemon_job_duration_seconds",
			Help:    "Wall time of jobs, by outcome (succeeded or failed).",
			Buckets: prometheus.ExponentialBuckets(0.005, 4, 12), // 5 ms to about 6 h
		}, []string{"outcome"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "jobdaemon_dispatch_latency_seconds",
			Help:    "Time from a free slot asking the source for a job to the child running it.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10), // 100 µs to 26 s
		}),
		cpu: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobdaemon_child_cpu_seconds_total",
			Help: "CPU time used by finished jobs' processes, by mode (user or system).",
		}, []string{"mode"}),
	}
	for _, r := range Reasons {
		m.failed.WithLabelValues(r)
		m.retried.WithLabelValues(r)
	}
	m.reg.MustRegister(m.started, m.succeeded, m.failed, m.retried, m.duration, m.latency, m.cpu,
		&statusCollector{status: status},
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
	if v == jobs.Retrying {
		m.retried.WithLabelValues(Reason(res)).Inc()
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
	descNotStart  = prometheus.NewDesc("jobdaemon_job_start_failures_total",
		"Jobs that could not be started (fork or exec failed: descriptors, processes, memory, a missing program) and went back to their source unrun.", nil, nil)
	descBackoff = prometheus.NewDesc("jobdaemon_start_backoff_seconds",
		"Time left before the daemon starts a job again, after one could not be started; 0 when it starts jobs.", nil, nil)
)

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRunning, descMax, descSaturated, descQueued, descReloads, descGen, descUp, descNotStart, descBackoff} {
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
