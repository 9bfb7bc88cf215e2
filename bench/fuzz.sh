#!/usr/bin/env bash
# Every fuzz target of .ci/fuzz-targets, each for FUZZTIME (default 60s;
# CI runs them for 5 s). A failing input is written to the package's
# testdata/fuzz/TARGET/ by go test: commit it with the fix, as a seed.
#
# Usage: bench/fuzz.sh            (FUZZTIME=10m bench/fuzz.sh for a night)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="/usr/local/go/bin:$PATH"

FUZZTIME="${FUZZTIME:-60s}"
failed=()
while read -r pkg target; do
	[[ -z $pkg || $pkg == \#* ]] && continue
	echo "== $pkg $target ($FUZZTIME)"
	if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg"; then
		failed+=("$pkg $target")
	fi
done <.ci/fuzz-targets
if ((${#failed[@]})); then
	printf 'FAILED: %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "all fuzz targets ran $FUZZTIME without a failure"
