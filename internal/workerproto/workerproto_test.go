package workerproto

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestAppendJob(t *testing.T) {
	for _, tc := range []struct {
		name string
		job  Job
		want string
	}{
		{"minimal", Job{ID: "42", Attempt: 1, Slot: 0},
			`{"id":"42","attempt":1,"slot":0,"payload":""}`},
		{"payload, path and meta", Job{ID: "a", Attempt: 3, Slot: 7, Payload: []byte("hello"), Path: "/spool/running/a",
			Meta: map[string]string{"z": "1", "a": "2"}},
			`{"id":"a","attempt":3,"slot":7,"payload":"aGVsbG8=","path":"/spool/running/a","meta":{"a":"2","z":"1"}}`},
		{"meta without the omitted key", Job{ID: "a", Path: "/p", Meta: map[string]string{"path": "/p", "name": "a"}, Omit: "path"},
			`{"id":"a","attempt":0,"slot":0,"payload":"","path":"/p","meta":{"name":"a"}}`},
		{"meta of the omitted key only", Job{ID: "a", Path: "/p", Meta: map[string]string{"path": "/p"}, Omit: "path"},
			`{"id":"a","attempt":0,"slot":0,"payload":"","path":"/p"}`},
		{"escapes", Job{ID: "q\"b\\n\nr\rt\tc\x01\x7f", Attempt: 1},
			`{"id":"q\"b\\n\nr\rt\tc\u0001` + "\x7f" + `","attempt":1,"slot":0,"payload":""}`},
		{"unicode", Job{ID: "é日本\u2028\u2029😀", Attempt: 1},
			`{"id":"é日本\u2028\u2029😀","attempt":1,"slot":0,"payload":""}`},
		{"invalid UTF-8 id", Job{ID: "a\xffb\xc3", Attempt: 1},
			`{"id":"a\ufffdb\ufffd","attempt":1,"slot":0,"payload":""}`},
		{"binary payload", Job{ID: "b", Payload: []byte{0, 0xff, '\n', '"'}},
			`{"id":"b","attempt":0,"slot":0,"payload":"AP8KIg=="}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := AppendJob([]byte("keep:"), &tc.job)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != "keep:"+tc.want {
				t.Errorf("got  %s\nwant keep:%s", got, tc.want)
			}
			checkJobLine(t, got[len("keep:"):], &tc.job)
		})
	}
	b, err := AppendJob([]byte("x"), &Job{ID: "p", Path: "/spool/\xff"})
	if !errors.Is(err, ErrPathNotUTF8) || string(b) != "x" {
		t.Errorf("non-UTF-8 path: %q, %v; want the buffer unchanged and ErrPathNotUTF8", b, err)
	}
}

// checkJobLine decodes line with encoding/json, the way a worker in any
// language would, and compares it with job.
func checkJobLine(t *testing.T, line []byte, job *Job) {
	t.Helper()
	if bytes.IndexByte(line, '\n') >= 0 || !utf8.Valid(line) {
		t.Fatalf("line has a newline or is not UTF-8: %q", line)
	}
	var got struct {
		ID      string            `json:"id"`
		Attempt int               `json:"attempt"`
		Slot    int               `json:"slot"`
		Payload string            `json:"payload"`
		Path    *string           `json:"path"`
		Meta    map[string]string `json:"meta"`
	}
	d := json.NewDecoder(bytes.NewReader(line))
	d.DisallowUnknownFields()
	if err := d.Decode(&got); err != nil {
		t.Fatalf("line is not the JSON of a job: %v: %s", err, line)
	}
	if _, err := d.Token(); err != io.EOF {
		t.Fatalf("text after the object: %s", line)
	}
	payload, err := base64.StdEncoding.DecodeString(got.Payload)
	if err != nil || !bytes.Equal(payload, job.Payload) {
		t.Errorf("payload %q decodes to %q (%v), want %q", got.Payload, payload, err, job.Payload)
	}
	if got.ID != sentForm(job.ID) || got.Attempt != job.Attempt || got.Slot != job.Slot {
		t.Errorf("decoded id %q attempt %d slot %d, want %q %d %d", got.ID, got.Attempt, got.Slot, sentForm(job.ID), job.Attempt, job.Slot)
	}
	if (got.Path != nil) != (job.Path != "") || got.Path != nil && *got.Path != job.Path {
		t.Errorf("decoded path %v, want %q", got.Path, job.Path)
	}
	want := maps.Clone(job.Meta)
	delete(want, job.Omit)
	if len(got.Meta) != len(want) {
		t.Errorf("decoded meta %q, want %q", got.Meta, want)
	}
	for k, v := range want {
		if got.Meta[sentForm(k)] != sentForm(v) {
			t.Errorf("meta %q = %q, want %q", k, got.Meta[sentForm(k)], v)
		}
	}
}

func TestParseAnswer(t *testing.T) {
	for _, tc := range []struct {
		line, id string
		want     Answer
		err      string // a part of the error, "" for none
	}{
		{`{"id":"42","ok":true}`, "42", Answer{ID: "42", OK: true}, ""},
		{` { "ok" : false , "id" : "42", "error": "no such customer" } ` + "\r", "42",
			Answer{ID: "42", Error: "no such customer"}, ""},
		{`{"id":"42","ok":false}`, "42", Answer{ID: "42"}, ""},
		{`{"id":"42","ok":false,"error":null}`, "42", Answer{ID: "42"}, ""},
		{`{"id":"42","ok":true,"error":"ignored"}`, "42", Answer{ID: "42", OK: true}, ""},
		{`{"id":"42","ok":true,"took_ms":3.5e2,"debug":{"a":[1,-0.5,true,null,{"b":"\u00e9"}]}}`, "42",
			Answer{ID: "42", OK: true}, ""},
		{`{"id":"\u0034\u0032","ok":false,"error":"line\nnext \"q\" \ud83d\ude00 \ud800 \/"}`, "42",
			Answer{ID: "42", Error: "line\nnext \"q\" 😀 \ufffd /"}, ""},
		{`{"id":"a\ufffdb","ok":true}`, "a\xffb", Answer{ID: "a\ufffdb", OK: true}, ""},
		{`{"id":"a` + "\xff" + `b","ok":true}`, "a\xffb", Answer{ID: "a\ufffdb", OK: true}, ""},

		{``, "42", Answer{}, "empty line"},
		{`ok`, "42", Answer{}, "not JSON: expected a value at byte 0"},
		{`{"id":"42","ok":true`, "42", Answer{}, "expected ',' or '}', found the end"},
		{`{"id":"42","ok":true}}`, "42", Answer{}, "text after the JSON object"},
		{`{"id":"42","ok":true} {"id":"43","ok":true}`, "42", Answer{}, "text after the JSON object"},
		{`["42",true]`, "42", Answer{}, "not a JSON object"},
		{`"42"`, "42", Answer{}, "not a JSON object"},
		{`{"ok":true}`, "42", Answer{}, `no "id"`},
		{`{"id":"42"}`, "42", Answer{}, `no "ok"`},
		{`{"id":42,"ok":true}`, "42", Answer{}, `"id" is not a string`},
		{`{"id":"42","ok":"true"}`, "42", Answer{}, `"ok" is not true or false`},
		{`{"id":"42","ok":1}`, "42", Answer{}, `"ok" is not true or false`},
		{`{"id":"42","ok":false,"error":{"msg":"x"}}`, "42", Answer{}, `"error" is not a string`},
		{`{"id":"41","ok":true}`, "42", Answer{}, `it answers job "41", but the job in progress is "42"`},
		{`{"ID":"42","ok":true}`, "42", Answer{}, `no "id"`},
		{`{"id":"42","id":"42","ok":true}`, "42", Answer{}, `"id" appears twice`},
		{`{"id":"42","ok":true,"ok":false}`, "42", Answer{}, `"ok" appears twice`},
		{`{"id":"42","ok":tru}`, "42", Answer{}, "not JSON"},
		{`{"id":"42","ok":true,"x":01}`, "42", Answer{}, "not JSON: expected ',' or '}'"},
		{`{"id":"42","ok":true,"x":1.}`, "42", Answer{}, "expected a digit"},
		{`{"id":"42","ok":true,"x":"\q"}`, "42", Answer{}, "expected an escape character"},
		{`{"id":"42","ok":true,"x":"\u12"}`, "42", Answer{}, "expected a hexadecimal digit"},
		{"{\"id\":\"4\t2\",\"ok\":true}", "42", Answer{}, "control characters must be escaped"},
		{`{"id":"42","ok":true,"x":` + strings.Repeat("[", 65) + strings.Repeat("]", 65) + `}`, "42", Answer{}, "nested more than 64 deep"},
		{`{"id":"42","ok":true,"x":"` + strings.Repeat("y", MaxAnswer) + `"}`, "42", Answer{}, "longer than 1048576 bytes"},
		{`{"id":"42",,"ok":true}`, "42", Answer{}, "expected a member name"},
		{`{"id" "42","ok":true}`, "42", Answer{}, "expected ':'"},
		{"\xef\xbb\xbf" + `{"id":"42","ok":true}`, "42", Answer{}, "not JSON"},
	} {
		got, err := ParseAnswer([]byte(tc.line), tc.id)
		name := tc.line
		if len(name) > 60 {
			name = name[:60] + "..."
		}
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrMalformed)):
			t.Errorf("%s: error %v, want one with %q", name, err, tc.err)
		case got != tc.want:
			t.Errorf("%s: %+v, want %+v", name, got, tc.want)
		}
	}
}

// The error quotes the start of the line, bounded, so that an operator
// sees what the worker wrote.
func TestParseAnswerErrorQuotesLine(t *testing.T) {
	_, err := ParseAnswer([]byte("Warning: undefined variable $x in /app/job.php on line 3"+strings.Repeat(".", 500)), "1")
	msg := err.Error()
	if !strings.Contains(msg, `"Warning: undefined variable $x`) || !strings.Contains(msg, "(556 bytes)") || len(msg) > 300 {
		t.Errorf("error %q", msg)
	}
}

func FuzzAppendJob(f *testing.F) {
	f.Add("42", "/spool/running/42", []byte("hello"), "k", "v", 1, 0)
	f.Add("a\xffb\u2028", "", []byte{0, 0xff}, "\x00", "\"\\", 3, 9)
	f.Fuzz(func(t *testing.T, id, path string, payload []byte, k, v string, attempt, slot int) {
		job := &Job{ID: id, Attempt: attempt, Slot: slot, Payload: payload, Path: path}
		if k != "" {
			job.Meta = map[string]string{k: v, "other": v}
		}
		line, err := AppendJob(nil, job)
		if path != "" && !utf8.ValidString(path) {
			if !errors.Is(err, ErrPathNotUTF8) {
				t.Fatalf("non-UTF-8 path accepted: %v", err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if sentForm(k) == "other" && k != "other" {
			return // two keys that one decodes to
		}
		checkJobLine(t, line, job)
		// A worker that echoes the id it decoded is answering this job.
		var decoded struct{ ID string }
		json.Unmarshal(line, &decoded)
		answer, _ := json.Marshal(map[string]any{"id": decoded.ID, "ok": true})
		if _, err := ParseAnswer(answer, id); err != nil {
			t.Errorf("echoed id refused: %v", err)
		}
	})
}

// FuzzParseAnswer checks ParseAnswer against encoding/json: what it
// accepts, encoding/json reads as the same answer; what encoding/json
// reads as an answer, it accepts, but for the rules it adds (no
// duplicate "id", "ok" or "error"; nesting at most 64 deep).
func FuzzParseAnswer(f *testing.F) {
	f.Add([]byte(`{"id":"42","ok":true}`), "42")
	f.Add([]byte(`{"id":"42","ok":false,"error":"x\u00e9\ud83d\ude00","n":[1,{"a":null}]}`), "42")
	f.Add([]byte(`{"id":"4","ok":true}`), "42")
	f.Fuzz(func(t *testing.T, line []byte, id string) {
		got, err := ParseAnswer(line, id)
		var m map[string]any
		jsonErr := json.Unmarshal(line, &m)
		if err == nil {
			if jsonErr != nil {
				t.Fatalf("accepted what encoding/json refuses (%v): %q", jsonErr, line)
			}
			mid, _ := m["id"].(string)
			ok, isBool := m["ok"].(bool)
			msg, _ := m["error"].(string)
			if !isBool || mid != got.ID || ok != got.OK || !ok && msg != got.Error {
				t.Fatalf("%q: got %+v, encoding/json reads id %q ok %v error %q", line, got, mid, ok, msg)
			}
			return
		}
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("error does not wrap ErrMalformed: %v", err)
		}
		if jsonErr != nil || m == nil {
			return
		}
		mid, isStr := m["id"].(string)
		_, isBool := m["ok"].(bool)
		e, hasErr := m["error"]
		_, errIsStr := e.(string)
		if !isStr || !isBool || hasErr && e != nil && !errIsStr || len(line) > MaxAnswer {
			return
		}
		if mid != id && mid != sentForm(id) {
			return
		}
		if duplicateMember(line) || strings.Contains(err.Error(), "nested more than") {
			return
		}
		t.Fatalf("refused an answer encoding/json reads (id %q): %v", mid, err)
	})
}

var benchJob = &Job{ID: "job-000123", Attempt: 1, Slot: 1, Payload: []byte(`{"customer":1234,"action":"send-invoice"}`)}

// BenchmarkEncodeDecode is the protocol's cost per job on the daemon's
// side: one job line out, one answer line in.
func BenchmarkEncodeDecode(b *testing.B) {
	var buf []byte
	answer := []byte(`{"id":"job-000123","ok":true}`)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		buf, err = AppendJob(buf[:0], benchJob)
		if err != nil {
			b.Fatal(err)
		}
		if a, err := ParseAnswer(answer, benchJob.ID); err != nil || !a.OK {
			b.Fatal(a, err)
		}
	}
}

func BenchmarkDecodeFailure(b *testing.B) {
	answer := []byte(`{"id":"job-000123","ok":false,"error":"customer 1234 has no address \u2014 skipped"}`)
	b.ReportAllocs()
	for b.Loop() {
		if a, err := ParseAnswer(answer, benchJob.ID); err != nil || a.OK {
			b.Fatal(a, err)
		}
	}
}

// BenchmarkEncodingJSON does the same with encoding/json, for comparison.
func BenchmarkEncodingJSON(b *testing.B) {
	type jobJSON struct {
		ID      string `json:"id"`
		Attempt int    `json:"attempt"`
		Slot    int    `json:"slot"`
		Payload []byte `json:"payload"`
	}
	answer := []byte(`{"id":"job-000123","ok":true}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := json.Marshal(jobJSON{benchJob.ID, benchJob.Attempt, benchJob.Slot, benchJob.Payload}); err != nil {
			b.Fatal(err)
		}
		var a struct {
			ID    string `json:"id"`
			OK    *bool  `json:"ok"`
			Error string `json:"error"`
		}
		if err := json.Unmarshal(answer, &a); err != nil || a.ID != benchJob.ID || a.OK == nil {
			b.Fatal(err)
		}
	}
}

// duplicateMember reports whether the JSON object in line has "id", "ok"
// or "error" more than once, which encoding/json allows (the last wins).
func duplicateMember(line []byte) bool {
	d := json.NewDecoder(bytes.NewReader(line))
	seen := map[string]bool{}
	depth := 0
	expectKey := false
	for {
		tok, err := d.Token()
		if err != nil {
			return false
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{', '[':
				depth++
				expectKey = depth == 1 && v == '{'
				continue
			case '}', ']':
				depth--
			}
		case string:
			if depth == 1 && expectKey {
				if (v == "id" || v == "ok" || v == "error") && seen[v] {
					return true
				}
				seen[v] = true
				expectKey = false
				continue
			}
		}
		if depth == 1 {
			expectKey = true
		}
	}
}

// The line of a job is built without allocating, as a command worker's
// every job is, when the buffer has room and Meta is small.
func TestAppendJobAllocs(t *testing.T) {
	j := &Job{ID: "a", Attempt: 1, Payload: []byte("hello"), Path: "/spool/running/a",
		Meta: map[string]string{"path": "/spool/running/a", "name": "a", "k": "v"}, Omit: "path"}
	b := make([]byte, 0, 512)
	if n := testing.AllocsPerRun(100, func() { b, _ = AppendJob(b[:0], j) }); n != 0 {
		t.Errorf("AppendJob allocates %v times per job", n)
	}
}
