#!/usr/bin/env bash
# Does a mass delete slow the reaping row when it runs on the same ext4
# without a journal? In each of P pairs, on a new ext4 without a journal
# (a loop image in /dev/shm): `harness reap -k 1000` plain, then 20 000
# files created and deleted in a sibling directory, then the same reap
# again. Without a journal, ext4 makes each new inode skip those freed in
# the last minutes (fs/ext4/ialloc.c, find_inode_bit), and every job the
# daemon files creates one: bench/run.sh gives its mass deletes a file
# system of their own for this reason (the nojournal task).
#
# Usage: bench/massdel-reap.sh     (as root; env: P=8 pairs, K=1000)
# Prints each pair's two `harness reap` lines, then the medians.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
export PATH="/usr/local/go/bin:$PATH"
P="${P:-8}"
K="${K:-1000}"
[[ $(id -u) == 0 ]] || { echo "bench/massdel-reap.sh: run as root (it loop-mounts an image)" >&2; exit 1; }

tmp=$(mktemp -d /dev/shm/massdel-reap.XXXXXX)
mnt="$tmp/mnt"
cleanup() {
	if mountpoint -q "$mnt"; then umount "$mnt" || true; fi
	rm -rf "$tmp"
}
trap cleanup EXIT
go build -o "$tmp/jobdaemon" ./cmd/jobdaemon
go build -o "$tmp/harness" ./bench/harness
gcc -O2 -o "$tmp/floors" bench/floors.c
truncate -s 1G "$tmp/ext4.img"
mkdir -p "$mnt"

reap() { "$tmp/harness" reap -bin "$tmp/jobdaemon" -dir "$mnt/$1/spool" -work "$mnt/$1/work" -floors "$tmp/floors" -k "$K"; }
for ((i = 1; i <= P; i++)); do
	new_ext4_nojournal "$tmp/ext4.img" "$mnt"
	plain=$(reap plain)
	"$tmp/floors" create "$mnt/deleted" 1 20000 >/dev/null
	after=$(reap after)
	echo "pair $i: plain $plain | after 20 000 deletes $after"
	for k in per_child_us cpu_us_per_child; do
		echo "$(field "$k" "$plain") $(field "$k" "$after")" >>"$tmp/$k"
	done
done
for k in per_child_us cpu_us_per_child; do
	echo "$k, medians of $P pairs: plain $(cut -d' ' -f1 "$tmp/$k" | median), after the deletes $(cut -d' ' -f2 "$tmp/$k" | median), after / plain $(awk '{ print $2 / $1 }' "$tmp/$k" | median)"
done
