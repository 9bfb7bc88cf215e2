// Package control is the daemon's control socket: HTTP with JSON bodies
// over a Unix socket, its server and its client.
//
// The socket is made by systemd (a jobdaemon.socket unit whose
// FileDescriptorName is "control", see Activated) or by the daemon itself
// (Listen), with mode 0660 and the configured group. On every connection
// the server reads the peer's credentials from the kernel (SO_PEERCRED
// and SO_PEERGROUPS) and lets in only root, the daemon's own user and the
// members of that group: a socket file whose mode was loosened by mistake
// does not open the daemon to everyone. The others get 403 and a log line.
//
// The endpoints:
//
//	GET  /v1/status             the state, the pool, every child, the counters
//	POST /v1/reload             re-read the configuration; answers when done
//	POST /v1/stop               {"mode": "drain" | "graceful" | "immediate"}
//	POST /v1/scale              {"max_children": 8} or {"delta": -1}
//	POST /v1/pause              take no new job; running jobs go on
//	POST /v1/resume             take jobs again
//	POST /v1/jobs?id=NAME       the body is the job's payload
//	POST /v1/jobs/{id}/signal   {"signal": "SIGTERM"}: to the job's process group
//	GET  /metrics               Prometheus metrics
//
// Errors come back as {"error": "..."} with a 4xx or 5xx status. With curl:
//
//	curl --unix-socket /run/jobdaemon/control.sock http://localhost/v1/status
//	curl --unix-socket /run/jobdaemon/control.sock -X POST http://localhost/v1/reload
//	curl --unix-socket /run/jobdaemon/control.sock -d '{"delta": 2}' http://localhost/v1/scale
//	curl --unix-socket /run/jobdaemon/control.sock --data-binary @job.json 'http://localhost/v1/jobs?id=job-1'
package control
