# bench/lib.sh: helpers that the benchmark scripts source.
# shellcheck shell=bash

# field KEY LINE: the value of KEY=... in a "key=value key=value" line, a
# "/s" unit dropped ("?" if there is none).
field() {
	local kv
	for kv in $2; do
		if [[ $kv == "$1="* ]]; then
			kv=${kv#*=}
			echo "${kv%/s}"
			return
		fi
	done
	echo "?"
}

# median: the median of the numbers on standard input, one a line ("?"
# for none).
median() { sort -g | awk '{ v[NR] = $1 } END { if (!NR) print "?"; else print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# new_ext4_nojournal IMAGE DIR: a new ext4 without a journal made on the
# file IMAGE and loop-mounted on DIR (what was mounted there is unmounted
# first). Without a journal, ext4 makes each new inode skip those freed
# in the last minutes: a mass delete slows what creates files after it.
# lazy_itable_init=0: mkfs zeroes the inode tables itself, rather than a
# kernel thread after the mount, during what is measured.
new_ext4_nojournal() {
	if mountpoint -q "$2"; then umount "$2"; fi
	mkfs.ext4 -q -F -O ^has_journal -E lazy_itable_init=0 "$1"
	mount -o loop "$1" "$2"
}
