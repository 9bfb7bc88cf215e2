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
