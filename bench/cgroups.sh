#!/usr/bin/env bash
# The cost per job of holding a job together, in the same run: process
# groups (without and with the state directory's record of each job's
# group, for a restart after a crash), a new cgroup per job, a cgroup per slot reused by its jobs
# (pkg/pool BenchmarkIsolation, /bin/true through a pool of 2xNumCPU
# slots). Rounds alternate the three, so a noisy neighbour hits them alike;
# the median and the best round of each are printed, and the extra cost
# per job against process groups.
# Usage: sudo bench/cgroups.sh     (ROUNDS=7 N=3000 by default)
# Needs root (or a delegated cgroup) for the cgroup modes; they are
# skipped otherwise.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="/usr/local/go/bin:$PATH"

ROUNDS="${ROUNDS:-7}"
N="${N:-3000}"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go test -c -o "$tmp/pool.test" ./pkg/pool

echo "N=$N jobs x $ROUNDS rounds on $(nproc) cores, $(uname -sr), $(go version | cut -d' ' -f3), uid $(id -u)"
for ((r = 0; r < ROUNDS; r++)); do
	"$tmp/pool.test" -test.run '^$' -test.bench 'BenchmarkIsolation' -test.benchtime "${N}x" |
		awk '/^BenchmarkIsolation\// { sub(/-[0-9]+$/, "", $1); sub(/^BenchmarkIsolation\//, "", $1); print $1, $3 }'
done >"$tmp/results"

echo
printf '%-16s %7s %12s %12s %16s\n' mode rounds "median ns" "best ns" "extra per job"
base=""
for mode in process-group process-group-state-dir cgroup-per-job cgroup-per-slot; do
	mapfile -t ns < <(awk -v m="$mode" '$1 == m { print $2 }' "$tmp/results" | sort -n)
	if ((${#ns[@]} == 0)); then
		printf '%-16s %7s\n' "$mode" skipped
		continue
	fi
	k=${#ns[@]}
	med=$(awk -v a="${ns[$(((k - 1) / 2))]}" -v b="${ns[$((k / 2))]}" 'BEGIN { printf "%.0f", (a + b) / 2 }')
	extra=""
	if [[ $mode == process-group ]]; then
		base=$med
	elif [[ -n $base ]]; then
		extra=$(awk -v m="$med" -v b="$base" 'BEGIN { printf "%+.0f us (%+.0f%%)", (m - b) / 1000, (m - b) * 100 / b }')
	fi
	printf '%-16s %7d %12s %12s %16s\n' "$mode" "$k" "$med" "${ns[0]}" "$extra"
done
