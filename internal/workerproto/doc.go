// Package workerproto is the JSON-lines protocol of command workers
// (docs/WORKER-PROTOCOL.md): the job line the daemon writes on a worker's
// standard input, and the answer line the worker writes on fd 3. The pool
// carries the lines (pool.ProtocolLines); this package gives them meaning.
//
// A job line, one JSON object without a newline in it:
//
//	{"id":"42","attempt":1,"slot":0,"payload":"aGVsbG8=","path":"/spool/running/42","meta":{"k":"v"}}
//
// "path" is there only when the job has one, "meta" only when it is not
// empty. Strings are UTF-8: a byte of an id or a meta value that is not
// part of valid UTF-8 is sent as U+FFFD (and an answer that echoes the id
// so changed still matches); a path that is not valid UTF-8 is refused,
// since the worker could not open it. The payload is bytes, in standard
// base64 with padding.
//
// An answer line:
//
//	{"id":"42","ok":true}
//	{"id":"42","ok":false,"error":"no such customer"}
//
// ParseAnswer checks it strictly where a mistake would be silent, and
// tolerates what a future version may add:
//   - it must be one JSON object, with nothing after it but white space;
//   - "id" is required, a string, and must be the id of the job in
//     progress;
//   - "ok" is required, true or false;
//   - "error" is optional, a string or null; with "ok": true it is
//     ignored;
//   - other members are ignored (whatever their value), so workers may add
//     their own; member names are case-sensitive, and "id", "ok" and
//     "error" may appear only once;
//   - at most MaxAnswer bytes, and values nested at most 64 deep.
//
// Any other answer is malformed: the error wraps ErrMalformed, says what
// was wrong and quotes the start of the line, for the failed job's record.
package workerproto
