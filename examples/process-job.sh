#!/bin/sh
# The demo's job command: jobdaemon runs it once per job file, with the
# file's path as $1 and the file itself on standard input. It is started
# directly, not through a shell string, so a file name is never parsed as
# shell code: here it is only ever "$1".
#
# A file that says "fail" fails (exit 3); one that says "flaky" fails on
# its first attempt and succeeds on the retry; any other file is counted.
set -eu

if grep -q fail "$1"; then
	echo "refusing $JOB_ID: it asks to fail" >&2
	exit 3
fi
if grep -q flaky "$1" && [ "$JOB_ATTEMPT" -lt 2 ]; then
	echo "attempt $JOB_ATTEMPT of $JOB_ID failed, the daemon will retry" >&2
	exit 75
fi
words=$(wc -w <"$1")
echo "$JOB_ID (attempt $JOB_ATTEMPT, slot $JOB_SLOT): $words words"
