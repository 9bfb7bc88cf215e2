# The test handler of the Python reference worker; see workers_test.go.
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from jobdaemon_worker import serve  # noqa: E402


def handle(job):
    verb, _, arg = job.payload.partition(b":")
    if verb == b"ok":
        return
    if verb == b"say":
        print(arg.decode())
        print("err:" + arg.decode(), file=sys.stderr)
    elif verb == b"fail":
        raise RuntimeError(arg.decode())
    elif verb == b"exit":
        sys.exit(int(arg))
    elif verb == b"hex":
        print(arg.hex())
    elif verb == b"job":
        print(json.dumps({"id": job.id, "attempt": job.attempt, "slot": job.slot, "path": job.path, "meta": job.meta}))
    elif verb == b"child":
        # A program the handler starts reads stdin: it must find nothing
        # there, rather than the next job.
        print("child exit %d" % os.system("cat"))
    else:
        raise ValueError("unknown test job %r" % job.payload)


serve(handle)
