#!/usr/bin/env bash
# The PostgreSQL job source against the database's own ceiling: two daemons
# in Go worker mode on one throwaway local PostgreSQL (fsync on), trivial
# jobs, jobs/s together and claim-to-start latency; then, in the same run,
# a bare pgx FOR UPDATE SKIP LOCKED loop per daemon (bench/pg/main.go).
# Target: 10 000 jobs/s or more together.
# Usage: bench/pg.sh                 (N=100000 jobs, RUNS=3, CHILDREN="8 16 32")
#        N=20000 RUNS=1 CHILDREN=16 bench/pg.sh
# As root, the server runs as the user postgres. The machine is shared and
# noisy: compare the runs, and the ratio more than the rates.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="/usr/local/go/bin:$PATH"

N="${N:-100000}"
RUNS="${RUNS:-3}"
read -r -a children <<<"${CHILDREN:-8 16 32}"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Built outside the tree, so that a bench run leaves no binary behind.
go build -o "$tmp/pg" ./bench/pg

echo "N=$N on $(nproc) cores, $(uname -sr), $(go version | cut -d' ' -f3)"
for c in "${children[@]}"; do
	for ((run = 1; run <= RUNS; run++)); do
		echo
		echo "== $c workers per daemon, run $run of $RUNS"
		"$tmp/pg" -jobs "$N" -daemons 2 -children "$c"
	done
done
