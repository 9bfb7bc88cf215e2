package integration

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// [metrics] listen serves /metrics, and only that, over TCP, to a
// Prometheus that has no right to the control socket; promtool finds
// nothing to say about what it serves.
func TestMetricsOverTCP(t *testing.T) {
	e := newEnv(t, "[metrics]\nlisten = \"127.0.0.1:0\"\n")
	d := e.start()
	addr := regexp.MustCompile(`"msg":"serving metrics","listen":"([^"]+)"`)
	var m []string
	e.waitFor("metrics served", d, func() bool { m = addr.FindStringSubmatch(d.out.String()); return m != nil })
	e.put("one", "ok\n")
	e.waitFor("the job done", d, func() bool { return e.count("done") == 1 })

	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + m[1] + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/metrics")
	for _, want := range []string{"jobdaemon_jobs_completed_total 1", "jobdaemon_runs_started_total 1",
		`jobdaemon_build_info{goversion="go`, "jobdaemon_config_last_reload_successful 1", "jobdaemon_queue_oldest_age_seconds 0"} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("GET /metrics: %d, lacks %q", code, want)
		}
	}
	for _, path := range []string{"/v1/status", "/v1/stop"} {
		if code, _ := get(path); code != http.StatusNotFound {
			t.Errorf("GET %s over TCP: %d, want 404: only /metrics is served there", path, code)
		}
	}

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool is missing (Debian package prometheus)")
		}
		t.Skip("promtool is missing (Debian package prometheus)")
	}
	c := exec.Command(promtool, "check", "metrics")
	c.Stdin = strings.NewReader(body)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	if err := c.Run(); err != nil || out.Len() > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out.String())
	}
}
