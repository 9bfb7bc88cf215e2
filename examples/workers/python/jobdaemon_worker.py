"""Run a Python function as a jobdaemon command worker.

    from jobdaemon_worker import serve

    def handle(job):
        print("working on", job.id)       # stdout and stderr are the job's log
        if not job.payload:
            raise ValueError("empty job")  # the job fails with this message

    serve(handle)

With ``[job] mode = "worker"``, jobdaemon starts the script once per slot
and keeps it: each job arrives on standard input as one JSON line, and
serve() answers each on file descriptor 3, ``{"id": ..., "ok": true}`` or
``{"id": ..., "ok": false, "error": "..."}``. A handler that returns
succeeds; one that raises an exception fails, with ``Type: message`` as the
job's error and the traceback in its log. serve() returns when standard
input closes (the daemon retires the worker); the script should then end.
The protocol: docs/WORKER-PROTOCOL.md.
"""

import base64
import binascii
import json
import os
import sys
import traceback

__all__ = ["Job", "serve"]

ANSWER_FD = 3


class Job:
    """One job: its id, attempt (1 for the first run), slot, payload
    (bytes), path (for spool jobs, else None) and meta (a dict of str)."""

    __slots__ = ("id", "attempt", "slot", "payload", "path", "meta")

    def __init__(self, id, attempt, slot, payload, path=None, meta=None):
        self.id = id
        self.attempt = attempt
        self.slot = slot
        self.payload = payload
        self.path = path
        self.meta = meta or {}

    def __repr__(self):
        return "Job(id=%r, attempt=%r, slot=%r, payload=<%d bytes>, path=%r, meta=%r)" % (
            self.id, self.attempt, self.slot, len(self.payload), self.path, self.meta)


def _fail_setup(message):
    sys.stderr.write("jobdaemon_worker: %s\n" % message)
    sys.stderr.flush()
    sys.exit(2)


def serve(handler):
    """Run handler on each job from standard input until it closes."""
    try:
        os.fstat(ANSWER_FD)
    except OSError:
        _fail_setup("file descriptor 3 is not open: this program is a "
                    'jobdaemon worker, started with [job] mode = "worker"')
    # The answers are ours alone: programs the handler starts must not
    # inherit them. Nor the job lines: the jobs are read from a private
    # copy of stdin, and stdin itself becomes /dev/null, so that a child
    # (or input()) can never swallow the next job.
    os.set_inheritable(ANSWER_FD, False)
    answers = os.fdopen(ANSWER_FD, "wb")
    jobs = os.fdopen(os.dup(0), "rb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    # Log lines reach the daemon as they are printed, under this job's id.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)

    for line in jobs:
        job = _decode(line)
        try:
            handler(job)
            answer = {"id": job.id, "ok": True}
        except Exception as e:  # SystemExit and KeyboardInterrupt end the worker
            traceback.print_exc()
            answer = {"id": job.id, "ok": False, "error": "%s: %s" % (type(e).__name__, e)}
        # The job's output goes out before its answer.
        sys.stdout.flush()
        sys.stderr.flush()
        answers.write(json.dumps(answer).encode("ascii") + b"\n")
        answers.flush()


def _decode(line):
    try:
        j = json.loads(line)
        return Job(
            id=j["id"],
            attempt=j["attempt"],
            slot=j["slot"],
            payload=base64.b64decode(j["payload"], validate=True),
            path=j.get("path"),
            meta=j.get("meta") or {},
        )
    except (ValueError, KeyError, TypeError, binascii.Error) as e:
        # The daemon wrote something else than a job: nothing to answer.
        _fail_setup("not a job line (%s: %s): %r" % (type(e).__name__, e, line[:200]))
