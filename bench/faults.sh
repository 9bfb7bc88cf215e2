#!/usr/bin/env bash
# The long versions of the fault suite (tests/integration/faults_*_test.go):
# the daemon SIGKILLed 20 times at random moments during 5000 jobs, with
# the spool and with PostgreSQL, ROUNDS times with new seeds; then the rest
# of the suite (child faults, pressure, signal storms, attacks) ROUNDS
# times. CI runs the short versions (300 jobs, 4 kills, once).
#
# Usage: sudo bench/faults.sh     (JOBS=5000 KILLS=20 ROUNDS=3; SEED=n repeats a run)
# It needs what the tests need: root, PostgreSQL's binaries, curl, prlimit.
# At the end it prints one FIGURES line per kill run, and the totals.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="/usr/local/go/bin:$PATH"

JOBS="${JOBS:-5000}"
KILLS="${KILLS:-20}"
ROUNDS="${ROUNDS:-3}"

out=$(mktemp)
trap 'rm -f "$out"' EXIT

for ((r = 1; r <= ROUNDS; r++)); do
	echo "== round $r of $ROUNDS: $JOBS jobs, $KILLS kills, spool and postgres"
	JOBDAEMON_FAULT_JOBS=$JOBS JOBDAEMON_FAULT_KILLS=$KILLS ${SEED:+JOBDAEMON_FAULT_SEED=$SEED} \
		go test -count=1 -timeout 60m -v -run 'TestFaultKill' ./tests/integration | tee -a "$out" |
		grep -E '^(--- |ok|FAIL)|FIGURES|SEED' || true
done
for ((r = 1; r <= ROUNDS; r++)); do
	echo "== round $r of $ROUNDS: the other faults"
	go test -count=1 -timeout 30m -v -run 'TestFault' -skip 'TestFaultKill' ./tests/integration | tee -a "$out" |
		grep -E '^(--- |ok|FAIL)' || true
done

echo
echo "== figures"
grep -o 'FIGURES.*' "$out" || true
awk '/FIGURES/ {
	for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] += kv[2] }
	runs++
} END {
	printf "%d kill runs: %d jobs, %d kills, %d in flight at kills, %d duplicates, %d lost\n",
		runs, v["jobs"], v["kills"], v["in_flight_at_kills"], v["duplicates"], v["lost"]
}' "$out"
if grep -q -- '^--- FAIL\|^FAIL' "$out"; then
	echo "FAILURES above" >&2
	exit 1
fi
