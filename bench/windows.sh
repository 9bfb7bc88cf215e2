#!/usr/bin/env bash
# How much of a program's file the kernel maps into its resident set, and
# why: for each section of the ELF file, the 64 KB windows that the
# program's page faults touched, against all of the section's windows.
# The kernel maps up to 64 KB around each faulting page of a file
# (fault-around, /sys/kernel/mm/... fault_around_bytes, 64 KB by default),
# so a section's resident share is about its touched windows' share: what
# counts is how many places the program touches, not how many bytes.
#
# Usage: bench/windows.sh PROGRAM [ARGS...]     (as root, with perf)
# e.g.   bench/windows.sh ./jobdaemon version
# It prints one line per section that has a window touched:
#   .text 90 of 124 windows (5.6 of 7.8 MB)
set -euo pipefail

[[ $# -ge 1 ]] || { echo "usage: bench/windows.sh PROGRAM [ARGS...]" >&2; exit 2; }
command -v perf >/dev/null || { echo "bench/windows.sh: no perf (apt-get install linux-perf)" >&2; exit 1; }
prog=$(command -v "$1")
data=$(mktemp)
trap 'rm -f "$data"' EXIT

perf record -q -e page-faults -c 1 -d -o "$data" -- "$@" >/dev/null
# The sections mapped from the file (PROGBITS with an address; .bss is
# anonymous memory): name, start, size (hex).
readelf -SW "$prog" | perl -ne 'print "$1 $2 $3\n" if /\]\s+(\.\S+)\s+PROGBITS\s+([0-9a-f]{16})\s+[0-9a-f]+\s+([0-9a-f]+)/ && hex($2) > 0' >"$data.sec"
trap 'rm -f "$data" "$data.sec"' EXIT
perf script -i "$data" -F addr 2>/dev/null | perl -e '
	my @sec;
	open(my $f, "<", shift) or die;
	while (<$f>) { my ($n, $a, $s) = split; push @sec, [$n, hex($a), hex($s)] }
	my %hit;
	while (<STDIN>) {
		my $a = hex((split)[0]);
		for my $s (@sec) {
			if ($a >= $s->[1] && $a < $s->[1] + $s->[2]) { $hit{$s->[0]}{$a >> 16} = 1; last }
		}
	}
	for my $s (@sec) {
		my ($n, $a, $sz) = @$s;
		next unless $hit{$n};
		my $all = (($a + $sz - 1) >> 16) - ($a >> 16) + 1;
		my $got = keys %{$hit{$n}};
		printf "%s %d of %d windows (%.1f of %.1f MB)\n", $n, $got, $all, $got * 65536 / 1048576, $sz / 1048576;
	}' "$data.sec"
