package control

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzRequest sends arbitrary bodies to every endpoint, through the whole
// handler: nothing may panic, and every answer is JSON with a status a
// client can act on (or the mux's redirect of an unclean path). Seeds live in testdata/fuzz/FuzzRequest.
func FuzzRequest(f *testing.F) {
	f.Add(uint8(0), "", []byte(`{"mode":"drain"}`))
	f.Add(uint8(1), "", []byte(`{"max_children": 3}`))
	f.Add(uint8(4), "job-1", []byte(`{"signal":"HUP"}`))
	b := &fakeBackend{max: 4, payloads: map[string]string{}}
	s := NewServer(b, ServerOptions{Group: -1, MaxPayload: 1 << 10})
	root := context.WithValue(context.Background(), peerKey{}, &Peer{Uid: 0})
	paths := []string{"/v1/stop", "/v1/scale", "/v1/pause", "/v1/resume", "/v1/jobs/%s/signal", "/v1/jobs?id=%s", "/v1/status"}
	f.Fuzz(func(t *testing.T, which uint8, id string, body []byte) {
		path := paths[int(which)%len(paths)]
		path = strings.Replace(path, "%s", urlSafe(id), 1)
		method := http.MethodPost
		if path == "/v1/status" {
			method = http.MethodGet
		}
		req := httptest.NewRequestWithContext(root, method, "http://x"+path, strings.NewReader(string(body)))
		rec := httptest.NewRecorder()
		s.http.Handler.ServeHTTP(rec, req)
		switch rec.Code {
		case 200, 201, 202, 400, 404, 413:
		case 301, 307:
			return // the mux's redirect of an unclean path, such as /v1/jobs//signal
		default:
			t.Fatalf("%s %s %q: status %d: %s", method, path, body, rec.Code, rec.Body)
		}
		if rec.Code != 404 || strings.Contains(path, "/signal") {
			var v map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
				t.Fatalf("%s %s %q: answer is not JSON: %q", method, path, body, rec.Body)
			}
			if rec.Code >= 400 && v["error"] == "" {
				t.Fatalf("%s %s: error answer without a message: %s", method, path, rec.Body)
			}
		}
	})
}

// urlSafe keeps the characters that may appear in a path segment as they
// are, and escapes the rest, so that the fuzzer reaches the handlers.
func urlSafe(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' {
			b.WriteByte(c)
		} else {
			b.WriteString("%" + strings.ToUpper(string("0123456789abcdef"[c>>4])+string("0123456789abcdef"[c&15])))
		}
	}
	return b.String()
}
