// Package workers holds the reference command workers, python/ and php/,
// each a serve(handler) library and an example handler. Its tests drive
// each real interpreter over real pipes through pkg/pool and
// internal/workerproto, as jobdaemon drives a worker with [job] mode =
// "worker". The protocol: docs/WORKER-PROTOCOL.md.
package workers
