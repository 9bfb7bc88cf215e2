#!/usr/bin/env bash
# The demo from the README: queue the sample jobs in examples/samples into a
# fresh spool under ./var, process them with the repository's config.toml
# (examples/process-job.sh runs once per file, 4 at a time), and show where
# everything went. No root, no systemd, no server.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="/usr/local/go/bin:$PATH"

echo "== building ./var/bin/jobdaemon"
go build -o var/bin/jobdaemon ./cmd/jobdaemon
jd=var/bin/jobdaemon

echo "== a fresh spool in ./var/spool"
rm -rf var/spool
"$jd" check-config --config config.toml >/dev/null

echo "== queueing examples/samples/*"
"$jd" submit --config config.toml examples/samples/*

echo "== running until the queue is empty (the flaky job is retried once)"
status=0
"$jd" run --config config.toml --drain || status=$?

echo
echo "== where the results went"
for dir in "done" failed; do
	echo "var/spool/$dir/:"
	find "var/spool/$dir" -mindepth 1 -maxdepth 1 -printf '  %f\n' | sort
done
echo
echo "== the record of the failed job (var/spool/failed/will-fail.txt.result.json)"
cat var/spool/failed/will-fail.txt.result.json
echo
echo "run --drain exited with $status: 1 means at least one job ended in failed/."
