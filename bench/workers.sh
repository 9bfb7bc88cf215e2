#!/usr/bin/env bash
# Command workers: trivial jobs through the Python and the PHP reference
# workers (bench/workers/noop.*) at 2 workers, through the whole daemon
# (jobs.Run, an in-memory source, WorkerCommand: bench/workers/daemon.go),
# measured by bench/workers in the same run as
#   bare     a minimal Go driver feeding the same worker over the same pipes
#   process  the same script as one process per job, through the daemon
#            too (JobsPerChild 1)
# and, to tell where time goes, the pool with a dispatcher goroutine of its
# own (pool) and without (direct).
# Targets (issue 11): daemon >= 0.8x bare, >= 20x process, and under 20 µs
# of the daemon's own CPU per job.
#
# Usage: bench/workers.sh   (N=20000 jobs per run, NP=300 for process,
#                            R=5 rounds, each mode once per round, medians)
# The machine is shared and noisy: the rounds interleave the modes so that
# a busy moment hurts all of them alike.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
export PATH="/usr/local/go/bin:$PATH"
# The workers import the library from the checkout: leave no __pycache__.
export PYTHONDONTWRITEBYTECODE=1

N="${N:-20000}"
NP="${NP:-300}"
R="${R:-5}"
P=2

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/workers" ./bench/workers

# The interpreters themselves, not a version manager's shim script that
# would add its own start-up to every process of the process mode.
python=$(python3 -c 'import sys; print(sys.executable)')
php=$(command -v php)

# run LANG MODE N [ENV...]: one run, appended to $tmp/LANG.MODE
run() {
	local lang=$1 mode=$2 n=$3 out interp script
	shift 3
	if [[ $lang == python ]]; then
		interp=$python script=bench/workers/noop.py
	else
		interp=$php script=bench/workers/noop.php
	fi
	local m=$mode
	[[ $m == daemon1 ]] && m=daemon
	out=$(env "$@" "$tmp/workers" -mode "$m" -n "$n" -p "$P" -- "$interp" "$script")
	echo "$(field rate "$out") $(field cpu_us_per_job "$out") $(field csw_per_job "$out") $(field allocs_per_job "$out")" >>"$tmp/$lang.$mode"
}

echo "N=$N NP=$NP R=$R, $P workers, on $(nproc) cores, $(uname -sr), $(go version | cut -d' ' -f3)"
echo "python: $python ($("$python" --version 2>&1)); php: $php ($("$php" -r 'echo PHP_VERSION;'))"
echo
for lang in python php; do
	for ((r = 0; r < R; r++)); do
		run "$lang" bare "$N"
		run "$lang" daemon "$N"
		run "$lang" daemon1 "$N" GOMAXPROCS=1
		run "$lang" pool "$N"
		run "$lang" direct "$N"
	done
	run "$lang" daemon-process "$NP"
done

# "csw/job" is the daemon's context switches per job, all its threads: each
# a thread put to sleep, and woken later, or preempted. "allocs" its heap
# allocations per job, two of which are the benchmark source's own.
# "x bare" is the median over the rounds of the rate divided by the bare
# driver's in the same round, with the lowest and highest: the machine's
# load drifts between rounds more than between two runs of one round.
printf '%-7s %-26s %9s %12s %8s %7s %9s %15s %10s\n' lang mode jobs/s "daemon µs/job" "csw/job" allocs "x bare" "(range)" "x process"
for lang in python php; do
	proc=$(cut -d' ' -f1 "$tmp/$lang.daemon-process" | median)
	for mode in bare daemon daemon1 pool direct daemon-process; do
		rate=$(cut -d' ' -f1 "$tmp/$lang.$mode" | median)
		cpu=$(cut -d' ' -f2 "$tmp/$lang.$mode" | median)
		csw=$(cut -d' ' -f3 "$tmp/$lang.$mode" | median)
		allocs=$(cut -d' ' -f4 "$tmp/$lang.$mode" | median)
		case $mode in
		bare) label="bare Go driver" ;;
		daemon) label="daemon (jobs.Run)" ;;
		daemon1) label="daemon, GOMAXPROCS=1" ;;
		pool) label="pool + a dispatcher" ;;
		direct) label="pool, no dispatcher" ;;
		daemon-process) label="one process per job" ;;
		esac
		if [[ $mode == daemon-process ]]; then
			ratio="-" lo="" hi=""
		else
			ratios=$(paste -d' ' <(cut -d' ' -f1 "$tmp/$lang.$mode") <(cut -d' ' -f1 "$tmp/$lang.bare") | awk '{ print $1 / $2 }')
			ratio=$(median <<<"$ratios")
			lo=$(sort -g <<<"$ratios" | head -1)
			hi=$(sort -g <<<"$ratios" | tail -1)
		fi
		awk -v l="$lang" -v m="$label" -v r="$rate" -v c="$cpu" -v w="$csw" -v a="$allocs" -v x="$ratio" -v lo="$lo" -v hi="$hi" -v p="$proc" \
			'BEGIN { rng = (lo == "") ? "" : sprintf("(%.2f-%.2f)", lo, hi); xb = (x == "-") ? "-" : sprintf("%.2fx", x);
			         printf "%-7s %-26s %9.0f %12.1f %8.2f %7.2f %9s %15s %9.0fx\n", l, m, r, c, w, a, xb, rng, r / p }'
	done
done
