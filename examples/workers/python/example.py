#!/usr/bin/env python3
"""An example worker: counts the words of each job's payload.

config.toml:

    [job]
    mode = "worker"
    command = ["/usr/bin/python3", "/opt/app/example.py"]

A payload that says "fail" fails the job.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from jobdaemon_worker import serve  # noqa: E402

# Whatever is loaded here is loaded once per worker, not once per job.
GREETING = "hello from worker %d" % os.getpid()


def handle(job):
    text = job.payload.decode("utf-8", "replace")
    if text.strip() == "fail":
        raise ValueError("job %s asked to fail" % job.id)
    print("%s (attempt %d, slot %d): %d words" % (job.id, job.attempt, job.slot, len(text.split())))


if __name__ == "__main__":
    print(GREETING)
    serve(handle)
