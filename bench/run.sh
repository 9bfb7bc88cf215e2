#!/usr/bin/env bash
# bench/run.sh: every row of issue 13's table in ONE run, as medians of R
# shuffled rounds, each ratio taken against its baseline of the same round
# (the C fork+exec+waitpid loop for command jobs, the bare Go loops for
# re-exec'd children and workers, the C floors for reaping and SIGTERM).
#
# Usage: bench/run.sh   (as root on Debian; env: N=2000 R=5, see below)
#
#   N       command jobs of /bin/true per measure (default 2000)
#   R       rounds (default 5; 0 runs only the profile at the end);
#           each round runs its measures in a new random order, so a
#           burst of load on this shared machine hits a different row
#           each time rather than always the same one
#   NW      worker jobs per measure (default 20000)
#   NPAR    jobs per GNU parallel measure (default 500: it costs ~6 ms of
#           its own per job, and its rate is steady after a few hundred)
#   NLAT    submits (and cps, renames) per latency measure (default 100)
#   WAKE    window of each wake-up count (default 10s)
#   NWK     jobs per command-worker measure (default 20000; its sub-run
#           has R rounds of its own)
#   PAIRS   pairs per round of the two rows that compare two measures
#           against a threshold near 1 (default 3): the mass delete on the
#           journalled image (plain, right after the delete) and reaping
#           1 000 children (daemon, C). Their rounds' ratios spread by
#           ±10% on this machine, so seven pairs cannot tell 0.95 from
#           1.00; each pair is two tasks of the same round
#   PROFILE 0 skips the profile of the daemon at the end (default 1)
#   ONLY    an extended regular expression: run only the tasks it matches
#           (such as ONLY='nojournal|create|jdisk|jmassdel', matched against
#           the task's name without its @pair; the table then has
#           "?" where a task did not run)
#
# It installs what it lacks (gcc, php-cli, python3, GNU parallel, strace),
# builds every binary into a temporary directory (the tree keeps none),
# and ends with a markdown table for docs/PERFORMANCE.md. The machine is
# shared and 2-core: only the ratios within one round mean much.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
export PATH="/usr/local/go/bin:$PATH"
export PYTHONDONTWRITEBYTECODE=1

N="${N:-2000}"
R="${R:-5}"
NW="${NW:-20000}"
NPAR="${NPAR:-500}"
NLAT="${NLAT:-100}"
WAKE="${WAKE:-10s}"
NWK="${NWK:-20000}"
PAIRS="${PAIRS:-3}"
PROFILE="${PROFILE:-1}"
ONLY="${ONLY:-}"
MS=(2 4 8)
KS=(10 100 1000)

say() { echo "== $*" >&2; }

# ---- what the run needs, installed only when missing -----------------
tmp=$(mktemp -d /var/tmp/jobdaemon-bench.XXXXXX) # on disk: the disk spool
shm=$(mktemp -d /dev/shm/jobdaemon-bench.XXXXXX) # tmpfs: the tmpfs spool
# ext4 with a journal, as mkfs.ext4 makes it by default, on a loop image
# in tmp (root only): where the mass delete row's target is measured. ext4
# without a journal (as some VMs' root file systems are) makes every new
# inode skip those freed in the last 60 to 360 seconds (fs/ext4/ialloc.c,
# recently_deleted()), which costs any program that creates files; the
# spool on tmp shows that, beside the C floor of creating one file.
ext4j=""
# ext4 without a journal, on a loop image in shm made afresh in each round
# (root only): where the mass deletes without a journal are measured (the
# nojournal task). Its skipped inodes would otherwise slow every measure
# that creates files on tmp for minutes after, in whatever order the round
# shuffled them: each of those deletes 20 000 files.
ext4n=""
cleanup() {
	local m
	for m in "$ext4j" "$ext4n"; do if [[ -n $m ]] && mountpoint -q "$m"; then umount "$m" || true; fi; done
	rm -rf "$tmp" "$shm"
}
trap cleanup EXIT

command -v go >/dev/null || { echo "bench/run.sh: no go in PATH (/usr/local/go/bin)" >&2; exit 1; }
pkgs=()
command -v gcc >/dev/null || pkgs+=(gcc libc6-dev)
command -v php >/dev/null || pkgs+=(php-cli)
command -v python3 >/dev/null || pkgs+=(python3)
command -v strace >/dev/null || pkgs+=(strace)
command -v perl >/dev/null || pkgs+=(perl)
command -v parallel >/dev/null || pkgs+=(parallel)
if ((${#pkgs[@]})); then
	say "installing ${pkgs[*]}"
	[[ $(id -u) == 0 ]] || { echo "bench/run.sh: run as root to install ${pkgs[*]}" >&2; exit 1; }
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q "${pkgs[@]}" >/dev/null ||
		{ apt-get update -q >/dev/null && apt-get install -y -q "${pkgs[@]}" >/dev/null; }
fi
# moreutils ships a parallel of its own under the same name: GNU parallel
# is then unpacked into the temporary directory rather than installed
# over it (its package would divert the moreutils one on a shared machine).
gnu_parallel=parallel
if ! parallel --version 2>/dev/null | grep -q 'GNU parallel'; then
	say "unpacking GNU parallel (the parallel in PATH is not GNU's)"
	(cd "$tmp" && { apt-get download -q parallel >/dev/null 2>&1 ||
		{ apt-get update -q >/dev/null && apt-get download -q parallel >/dev/null 2>&1; }; })
	dpkg-deb -x "$tmp"/parallel_*.deb "$tmp/gnu"
	gnu_parallel="$tmp/gnu/usr/bin/parallel"
fi
mkdir -p "$HOME/.parallel" && touch "$HOME/.parallel/will-cite"

if [[ $(id -u) == 0 ]] && command -v mkfs.ext4 >/dev/null; then
	truncate -s 2G "$tmp/ext4j.img"
	mkdir -p "$tmp/ext4j"
	if mkfs.ext4 -q -F "$tmp/ext4j.img" && mount -o loop "$tmp/ext4j.img" "$tmp/ext4j"; then
		ext4j="$tmp/ext4j"
	else
		say "no loop mount here: the mass delete rows are not measured"
	fi
	truncate -s 1G "$shm/ext4n.img"
	mkdir -p "$shm/ext4n"
	[[ -z $ext4j ]] || ext4n="$shm/ext4n"
fi
# journal DIR: "with a journal" or "without a journal" for ext4 (a
# journalled ext4 has its jbd2 entry, DEVICE-N, in /proc/fs/jbd2).
journal() {
	local src
	src=$(findmnt -n -o SOURCE -T "$1")
	if compgen -G "/proc/fs/jbd2/${src##*/}-*" >/dev/null; then echo "with a journal"; else echo "without a journal"; fi
}

# ---- binaries, outside the tree ---------------------------------------
say "building into $tmp"
b="$tmp/bin"
mkdir -p "$b"
go build -o "$b/jobdaemon" ./cmd/jobdaemon
go build -tags benchprofile -o "$b/jobdaemon-prof" ./cmd/jobdaemon
for p in harness library reexec reexecfloor workers; do go build -o "$b/$p" "./bench/$p"; done
gcc -O2 -Wall -o "$b/forkexec" bench/forkexec.c
gcc -O2 -Wall -o "$b/floors" bench/floors.c

# goloop: the Go exec.Command loop (P goroutines, each exec.Command(cmd).Run()
# in turn, the Go twin of forkexec.c), and cpu, which runs a command with
# this script's stdin and prints its wall time and the CPU time of its own
# threads, not its children's (read from /proc while it is a zombie).
mkdir -p "$tmp/goloop"
cat >"$tmp/goloop/main.go" <<'EOF'
package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

func main() {
	switch os.Args[1] {
	case "loop": // loop N P CMD
		n, _ := strconv.Atoi(os.Args[2])
		p, _ := strconv.Atoi(os.Args[3])
		var next, failed atomic.Int64
		var wg sync.WaitGroup
		t0 := time.Now()
		for range p {
			wg.Go(func() {
				for next.Add(1) <= int64(n) {
					if exec.Command(os.Args[4]).Run() != nil {
						failed.Add(1)
					}
				}
			})
		}
		wg.Wait()
		secs := time.Since(t0).Seconds()
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		fmt.Printf("jobs=%d seconds=%.3f rate=%.0f/s cpu_us_per_job=%.1f\n", n, secs, float64(n)/secs, float64(cpu.Microseconds())/float64(n))
		if failed.Load() > 0 {
			fmt.Fprintln(os.Stderr, "goloop:", failed.Load(), "jobs failed")
			os.Exit(1)
		}
	case "super": // super K: floors super in Go (os/signal, exec.Cmd)
		k, _ := strconv.Atoi(os.Args[2])
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		cmds := make([]*exec.Cmd, k)
		for i := range cmds {
			cmds[i] = exec.Command("/bin/sleep", "1000")
			if err := cmds[i].Start(); err != nil {
				fmt.Fprintln(os.Stderr, "goloop super:", err)
				os.Exit(1)
			}
		}
		<-term
		for _, c := range cmds {
			c.Process.Signal(syscall.SIGTERM)
		}
		for _, c := range cmds {
			c.Wait()
		}
	case "hello": // the start-up floor of a Go program: nothing at all
	case "sleep": // a small Go program, idle, for the exit floor
		time.Sleep(time.Hour)
	case "start": // start N CMD ARGS...: p50 and p99 ms from fork to exit, p50 of the peak RSS
		n, _ := strconv.Atoi(os.Args[2])
		ms := make([]float64, n)
		rss := make([]int64, n)
		for i := range ms {
			t0 := time.Now()
			cmd := exec.Command(os.Args[3], os.Args[4:]...)
			if err := cmd.Run(); err != nil {
				fmt.Fprintln(os.Stderr, "goloop start:", err)
				os.Exit(1)
			}
			ms[i] = float64(time.Since(t0).Microseconds()) / 1e3
			rss[i] = cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss
		}
		slices.Sort(ms)
		slices.Sort(rss)
		fmt.Printf("p50_ms=%.2f p99_ms=%.2f maxrss_kb=%d\n", ms[n/2], ms[(n*99+99)/100-1], rss[n/2])
	case "cpu": // cpu CMD ARGS...: wall seconds and own CPU µs
		cmd := exec.Command(os.Args[2], os.Args[3:]...)
		cmd.Stdin, cmd.Stderr = os.Stdin, os.Stderr
		t0 := time.Now()
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "goloop cpu:", err)
			os.Exit(1)
		}
		var si [128]byte
		for {
			// waitid(P_PID, pid, WEXITED|WNOWAIT): exited, not yet reaped.
			_, _, e := syscall.Syscall6(syscall.SYS_WAITID, 1, uintptr(cmd.Process.Pid), uintptr(unsafe.Pointer(&si[0])), 4|0x1000000, 0, 0)
			if e != syscall.EINTR {
				break
			}
		}
		secs := time.Since(t0).Seconds()
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		if err := cmd.Wait(); err != nil {
			fmt.Fprintln(os.Stderr, "goloop cpu:", err)
			os.Exit(1)
		}
		fmt.Printf("seconds=%.3f cpu_us=%d\n", secs, (u+s)*10000)
	}
}
EOF
(cd "$tmp/goloop" && GOFLAGS="" go build -o "$b/goloop" main.go)

# ---- measures ------------------------------------------------------------
res="$tmp/res" # one file per measure and key: lines "round value"
mkdir -p "$res"

# keep ROUND NAME LINE KEY...: file each KEY of LINE under NAME.KEY.
keep() {
	local r=$1 name=$2 line=$3 k
	shift 3
	for k in "$@"; do echo "$r $(field "$k" "$line")" >>"$res/$name.$k"; done
}
# wrapped ROUND NAME JOBS CMD...: CMD's rate and own CPU per job, stdin kept.
wrapped() {
	local r=$1 name=$2 n=$3 out
	shift 3
	out=$("$b/goloop" cpu "$@")
	awk -v r="$r" -v n="$n" -v s="$(field seconds "$out")" -v c="$(field cpu_us "$out")" -v f="$res/$name" \
		'BEGIN { print r, n / s >> (f ".rate"); print r, c / n >> (f ".cpu_us_per_job") }'
}
H=("$b/harness")
# spool_args ROOT: a spool and a work directory of their own for each
# measure, kept until the end. A spool emptied right before a measure (the
# harness empties the one it is given) would put every measure on disk
# "right after a mass delete": ext4 without a journal then skips the inodes
# just freed, and the daemon's CPU per job triples on such a file system
# for the next minutes (1 100 against 350 µs). Only the nojournal task
# measures that, on purpose, on a file system of its own.
# (r and t are those of the caller, measure.)

measure() { # measure ROUND TASK
	local r=$1 t=$2 m k out
	# The harness's flags for a spool of this measure's own, on disk or tmpfs.
	local on_disk=(-bin "$b/jobdaemon" -dir "$tmp/$r.$t/spool" -work "$tmp/$r.$t/work")
	local on_shm=(-bin "$b/jobdaemon" -dir "$shm/$r.$t/spool" -work "$shm/$r.$t/work")
	local on_j=(-bin "$b/jobdaemon" -dir "$ext4j/$r.$t/spool" -work "$ext4j/$r.$t/work")
	local on_n=(-bin "$b/jobdaemon" -dir "$ext4n/$r.$t/spool" -work "$ext4n/$r.$t/work")
	case $t in
	c.*)
		m=${t#c.}
		# The C loop prints its own rate; its CPU comes from the wrapper.
		out=$("$b/goloop" cpu "$b/forkexec" "$N" "$m" </dev/null)
		keep "$r" "$t" "$("$b/forkexec" "$N" "$m")" rate
		echo "$r $(awk -v c="$(field cpu_us "$out")" -v n="$N" 'BEGIN { print c / n }')" >>"$res/$t.cpu_us_per_job"
		;;
	xargs.*) m=${t#xargs.}; seq "$N" | wrapped "$r" "$t" "$N" xargs -P "$m" -n 1 /bin/true ;;
	par.*) m=${t#par.}; seq "$NPAR" | wrapped "$r" "$t" "$NPAR" "$gnu_parallel" -j "$m" /bin/true ;;
	go.*) m=${t#go.}; keep "$r" "$t" "$("$b/goloop" loop "$N" "$m" /bin/true)" rate cpu_us_per_job ;;
	disk.*) m=${t#disk.}; keep "$r" "$t" "$("${H[@]}" spool "${on_disk[@]}" -m "$m" -n "$N")" rate cpu_us_per_job ;;
	tmpfs.*) m=${t#tmpfs.}; keep "$r" "$t" "$("${H[@]}" spool "${on_shm[@]}" -m "$m" -n "$N")" rate cpu_us_per_job ;;
	nojournal)
		# On a new ext4 without a journal, the plain measures first: the
		# spool (ndisk) and the C floor of creating a file; then the same
		# right after 20 000 files were created and deleted.
		new_ext4_nojournal "$shm/ext4n.img" "$ext4n"
		measure "$r" ndisk.2
		measure "$r" create.n.0
		measure "$r" massdel.2
		measure "$r" create.n.20000
		;;
	ndisk.*) m=${t#ndisk.}; keep "$r" "$t" "$("${H[@]}" spool "${on_n[@]}" -m "$m" -n "$N")" rate cpu_us_per_job ;;
	massdel.*)
		# Right after 20 000 files were created and deleted in done/.
		m=${t#massdel.}
		keep "$r" "$t" "$("${H[@]}" spool "${on_n[@]}" -m "$m" -n "$N" -massdelete 20000)" rate cpu_us_per_job
		;;
	jdisk.*) m=${t#jdisk.}; keep "$r" "$t" "$("${H[@]}" spool "${on_j[@]}" -m "$m" -n "$N")" rate cpu_us_per_job ;;
	jmassdel.*)
		m=${t#jmassdel.}
		keep "$r" "$t" "$("${H[@]}" spool "${on_j[@]}" -m "$m" -n "$N" -massdelete 20000)" rate cpu_us_per_job
		;;
	create.*)
		# The C floor: CPU to create one file, plain (.0) and right after
		# 20 000 deletes in the same directory (.20000), on tmp (disk.) and
		# on the images without a journal (n.) and with one (j.).
		local fs=${t#create.} del=${t##*.}
		fs=${fs%%.*}
		if [[ $fs == j ]]; then fs=$ext4j; else fs=$ext4n; fi
		keep "$r" "$t" "$("$b/floors" create "$fs/$r.$t" "$N" "$del")" cpu_us_per_file
		;;
	lib.*) m=${t#lib.}; keep "$r" "$t" "$("$b/library" -mode command -n "$N" -p "$m")" rate cpu_us_per_job ;;
	reexec) keep "$r" "$t" "$("$b/reexec" -n "$N" -p 2)" rate cpu_us_per_job ;;
	reexecfloor) keep "$r" "$t" "$("$b/reexecfloor" -n "$N" -p 2)" rate cpu_us_per_job ;;
	libreexec) keep "$r" "$t" "$("$b/library" -mode reexec -n "$N" -p 2)" rate cpu_us_per_job ;;
	bareworker) keep "$r" "$t" "$("$b/library" -mode bareworker -n "$NW" -p 2)" rate cpu_us_per_job ;;
	worker) keep "$r" "$t" "$("$b/library" -mode worker -n "$NW" -p 2)" rate cpu_us_per_job ;;
	reap.*)
		k=${t#reap.}
		keep "$r" "$t" "$("${H[@]}" reap "${on_disk[@]}" -floors "$b/floors" -k "$k")" per_child_us cpu_us_per_child
		;;
	creap.*)
		k=${t#creap.}
		rm -f "$tmp/gate" "$tmp/ready"
		keep "$r" "$t" "$("$b/floors" reap "$k" "$tmp/gate" "$tmp/ready")" per_child_us
		;;
	reapoff.*)
		# The same with [pool] cgroups = "off": what the cgroups cost.
		k=${t#reapoff.}
		keep "$r" "$t" "$("${H[@]}" reap "${on_disk[@]}" -cgroups off -floors "$b/floors" -k "$k")" per_child_us cpu_us_per_child
		;;
	termoff) keep "$r" "$t" "$("${H[@]}" term "${on_disk[@]}" -cgroups off -k 8)" ms ;;
	diskoff.*) m=${t#diskoff.}; keep "$r" "$t" "$("${H[@]}" spool "${on_disk[@]}" -cgroups off -m "$m" -n "$N")" rate cpu_us_per_job ;;
	start)
		# Start-up alone (fork to exit), for the latency row: the CLI, a Go
		# program that does nothing, and cp's own start.
		keep "$r" start.cli "$("$b/goloop" start "$NLAT" "$b/jobdaemon" version)" p50_ms p99_ms maxrss_kb
		keep "$r" start.hello "$("$b/goloop" start "$NLAT" "$b/goloop" hello)" p50_ms p99_ms maxrss_kb
		keep "$r" start.true "$("$b/goloop" start "$NLAT" /bin/true)" p50_ms p99_ms
		;;
	term) keep "$r" "$t" "$("${H[@]}" term "${on_disk[@]}" -k 8)" ms ;;
	cterm) keep "$r" "$t" "$("$b/floors" term 8)" ms ;;
	pp.*) keep "$r" "$t" "$("$b/floors" pingpong "${t#pp.}" "$NW")" cpu_us_per_round_trip ;;
	super.c) keep "$r" "$t" "$("${H[@]}" super -k 8 -- "$b/floors" super 8)" ms ;;
	super.go) keep "$r" "$t" "$("${H[@]}" super -k 8 -- "$b/goloop" super 8)" ms ;;
	exit.daemon) keep "$r" "$t" "$("${H[@]}" term "${on_disk[@]}" -k 0 -signal KILL)" ms ;;
	exit.c) keep "$r" "$t" "$("${H[@]}" exit -- /bin/sleep 1000)" p50_ms ;;
	exit.go) keep "$r" "$t" "$("${H[@]}" exit -- "$b/goloop" sleep)" p50_ms ;;
	idle) keep "$r" "$t" "$("${H[@]}" wake "${on_disk[@]}" -window "$WAKE")" wakeups_per_s listings rss_kb rss_anon_kb threads ;;
	busy) keep "$r" "$t" "$("${H[@]}" wake "${on_disk[@]}" -window "$WAKE" -k 8)" wakeups_per_s listings rss_kb ;;
	latency)
		keep "$r" "$t" "$("${H[@]}" latency "${on_disk[@]}" -floors "$b/floors" -n "$NLAT")" \
			submit_p50_ms submit_p99_ms cp_p50_ms cp_p99_ms rename_p50_ms rename_p99_ms cli_p50_ms cli_p99_ms
		;;
	*) echo "bench/run.sh: unknown task $t" >&2; exit 1 ;;
	esac
}

tasks=(reexec reexecfloor libreexec bareworker worker pp.pipe pp.seqpacket term termoff cterm super.c super.go exit.daemon exit.c exit.go idle busy latency start diskoff.2 reapoff.1000)
for m in "${MS[@]}"; do tasks+=("c.$m" "xargs.$m" "par.$m" "go.$m" "disk.$m" "tmpfs.$m" "lib.$m"); done
[[ -z $ext4j ]] || tasks+=(nojournal create.j.0 create.j.20000)
for k in "${KS[@]}"; do [[ $k == 1000 ]] || tasks+=("reap.$k" "creap.$k"); done
# TASK@I: pair I of a row measured PAIRS times a round; its results are
# kept under the round "ROUND.I", so that ratio pairs them.
for ((i = 1; i <= PAIRS; i++)); do
	tasks+=("reap.1000@$i" "creap.1000@$i")
	[[ -z $ext4j ]] || tasks+=("jdisk.2@$i" "jmassdel.2@$i")
done

if [[ -n $ONLY ]]; then
	only=()
	for t in "${tasks[@]}"; do if [[ ${t%@*} =~ $ONLY ]]; then only+=("$t"); fi; done
	tasks=("${only[@]}")
fi
code="$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- . 2>/dev/null || echo ', with changes not committed')"
machine="$(nproc) cores, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $(uname -sr), $(go version | cut -d' ' -f3), disk spool on $(df --output=fstype "$tmp" | tail -1) $(journal "$tmp"), tmpfs spool on $(df --output=fstype "$shm" | tail -1), load at start $(cut -d' ' -f1-3 /proc/loadavg)"
t_start=$(date +%s)
for ((r = 1; r <= R; r++)); do
	say "round $r of $R (load $(cut -d' ' -f1 /proc/loadavg))"
	for t in $(printf '%s\n' "${tasks[@]}" | shuf); do
		if [[ $t == *@* ]]; then measure "$r.${t#*@}" "${t%@*}"; else measure "$r" "$t"; fi
	done
done

# The command-worker protocol against a bare driver: bench/workers, a
# shorter sub-run of R rounds (bare and daemon alternate in each round).
py=$(python3 -c 'import sys; print(sys.executable)')
php=$(command -v php)
for ((r = 1; r <= R; r++)); do
	say "command workers, round $r of $R"
	for lang in python php; do
		if [[ $lang == python ]]; then set -- "$py" bench/workers/noop.py; else set -- "$php" bench/workers/noop.php; fi
		for mode in $(printf 'bare\ndaemon\n' | shuf); do
			keep "$r" "cw$lang.$mode" "$("$b/workers" -mode "$mode" -n "$NWK" -p 2 -- "$@")" rate cpu_us_per_job
		done
	done
done
t_end=$(date +%s)

# ---- the table -------------------------------------------------------------
# (R=0: no rounds, no table; only the profile below.)
if ((R > 0)); then
# col NAME.KEY: the values of a measure, none for a task that did not run (ONLY).
col() { if [[ -f $res/$1 ]]; then cut -d' ' -f2 "$res/$1"; fi; }
med() { col "$1" | median; }       # med NAME.KEY: the median value
rng() { col "$1" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (!NR) print "?"; else printf "%g-%g", lo, hi }'; }
# ratio A B [OP]: the median over rounds of A/B (or A-B with OP=-), same round.
ratio() {
	join <(sort -k1,1 "$res/$1" 2>/dev/null) <(sort -k1,1 "$res/$2" 2>/dev/null) |
		awk -v op="${3:-/}" '{ print (op == "-") ? $2 - $3 : $2 / $3 }' | median
}
# mratio A B: the median of A over the median of B, for measures of
# different rounds (a measure of each round against one of PAIRS pairs).
mratio() { awk -v a="$(med "$1")" -v b="$(med "$2")" 'BEGIN { if (a == "?" || b == "?" || b == 0) print "?"; else print a / b }'; }
ratios_rng() {
	join <(sort -k1,1 "$res/$1" 2>/dev/null) <(sort -k1,1 "$res/$2" 2>/dev/null) | awk '{ print $2 / $3 }' | sort -g |
		awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (!NR) print "?"; else printf "%.2f-%.2f", lo, hi }'
}
# fmt FORMAT VALUE: VALUE formatted, or "?" for a measure that did not run.
fmt() { awk -v f="$1" -v v="$2" 'BEGIN { if (v == "" || v == "?") print "?"; else printf f, v }'; }
f2() { fmt %.2f "$1"; }
f0() { fmt %.0f "$1"; }
f1() { fmt %.1f "$1"; }
# verdict COND: "met" or "not met" by an awk condition on nothing else.
verdict() {
	if [[ $1 == *'?'* ]]; then echo "not measured"; return; fi
	awk "BEGIN { exit !($1) }" && echo met || echo "**not met**"
}

r_disk=() r_tmpfs=() r_x=() r_go=() r_par=() r_lib=() ahead=1
for m in "${MS[@]}"; do
	r_disk+=("$(f2 "$(ratio "disk.$m.rate" "c.$m.rate")")")
	r_tmpfs+=("$(f2 "$(ratio "tmpfs.$m.rate" "c.$m.rate")")")
	r_x+=("$(f2 "$(ratio "xargs.$m.rate" "c.$m.rate")")")
	r_par+=("$(f2 "$(ratio "par.$m.rate" "c.$m.rate")")")
	r_go+=("$(f2 "$(ratio "go.$m.rate" "c.$m.rate")")")
	r_lib+=("$(f2 "$(ratio "lib.$m.rate" "c.$m.rate")")")
done
for i in 0 1 2; do
	awk -v a="${r_disk[i]}" -v b="${r_tmpfs[i]}" -v x="${r_x[i]}" 'BEGIN { exit !(a > x && b > x) }' || ahead=0
done
j() {
	local IFS=/ s
	s="${*// /}"
	echo "${s//\// / }"
}
cpu_d=$(f0 "$(med disk.2.cpu_us_per_job)") cpu_t=$(f0 "$(med tmpfs.2.cpu_us_per_job)")
cpu_d4=$(f0 "$(med disk.4.cpu_us_per_job)") cpu_d8=$(f0 "$(med disk.8.cpu_us_per_job)")
md=$(f2 "$(ratio massdel.2.rate ndisk.2.rate)")
md_cpu=$(f0 "$(med massdel.2.cpu_us_per_job)")
if [[ -n $ext4j ]]; then
	jmd=$(f2 "$(ratio jmassdel.2.rate jdisk.2.rate)")
	jmd_row="$jmd ($(ratios_rng jmassdel.2.rate jdisk.2.rate); daemon $(f0 "$(med jmassdel.2.cpu_us_per_job)") against $(f0 "$(med jdisk.2.cpu_us_per_job)") µs/job) | 1.00 | no slowdown (>= 0.95) | $(verdict "$jmd >= 0.95")"
	jcreate="$(f1 "$(med create.j.0.cpu_us_per_file)") / $(f1 "$(med create.j.20000.cpu_us_per_file)")"
else
	jmd_row="not measured (no loop mount) | 1.00 | no slowdown (>= 0.95) | **not measured**"
	jcreate="not measured"
fi
reex=$(f2 "$(ratio libreexec.rate reexec.rate)")
wk=$(f2 "$(ratio worker.rate bareworker.rate)")
idle=$(f2 "$(med idle.wakeups_per_s)") busy=$(f2 "$(med busy.wakeups_per_s)")
lst=$(med idle.listings)
sub99=$(f2 "$(med latency.submit_p99_ms)")
mb() { awk -v k="$1" 'BEGIN { if (k == "?") print "?"; else printf "%.1f", k / 1024 }'; }
rss=$(mb "$(med idle.rss_kb)")
rss_anon=$(mb "$(med idle.rss_anon_kb)")
reap=() creap=() rr=()
for k in "${KS[@]}"; do
	reap+=("$(f0 "$(med "reap.$k.per_child_us")")") creap+=("$(f0 "$(med "creap.$k.per_child_us")")")
	rr+=("$(f2 "$(ratio "reap.$k.per_child_us" "creap.$k.per_child_us")")")
done
term_d=$(f1 "$(ratio term.ms cterm.ms -)")

echo
echo "Command: \`bench/run.sh\` (N=$N R=$R NW=$NW NPAR=$NPAR NLAT=$NLAT WAKE=$WAKE NWK=$NWK PAIRS=$PAIRS), $(date -u +%Y-%m-%d), $(((t_end - t_start) / 60)) min $(((t_end - t_start) % 60)) s, code at $code"
echo
echo "Machine: $machine"
echo
echo "Medians of $R shuffled rounds; \"x C\" is the median over the rounds of the rate divided by the C loop's at the same M in the same round; (lo-hi) is the range of that ratio over the rounds. The mass delete on the journalled image and reaping 1 000 children are measured in $PAIRS pairs a round, and their ratios are over all $((R * PAIRS)) pairs."
echo
echo "| what | M=2 / 4 / 8 (or as said) | baseline, same run | target | |"
echo "|---|---|---|---|---|"
echo "| C fork+exec+waitpid loop, jobs/s | $(f0 "$(med c.2.rate)") / $(f0 "$(med c.4.rate)") / $(f0 "$(med c.8.rate)") | 1.00x by definition | | |"
echo "| \`xargs -P\`, x C | $(j "${r_x[@]}") | | | |"
echo "| GNU \`parallel -j\` ($NPAR jobs), x C | $(j "${r_par[@]}") | | | |"
echo "| Go exec.Command loop, x C | $(j "${r_go[@]}") | | | |"
echo "| jobdaemon command jobs, spool on disk, x C | $(j "${r_disk[@]}") ($(ratios_rng disk.2.rate c.2.rate) at M=2) | xargs $(j "${r_x[@]}") | >= 0.85 at M=2, 4; ahead of xargs at every M | $(verdict "${r_disk[0]} >= 0.85 && ${r_disk[1]} >= 0.85 && $ahead") |"
echo "| jobdaemon command jobs, spool on tmpfs, x C | $(j "${r_tmpfs[@]}") ($(ratios_rng tmpfs.2.rate c.2.rate) at M=2) | xargs $(j "${r_x[@]}") | same | $(verdict "${r_tmpfs[0]} >= 0.85 && ${r_tmpfs[1]} >= 0.85 && $ahead") |"
echo "| spool on ext4 with a journal (mkfs.ext4 defaults, loop image) right after 20 000 files deleted in done/, x the plain run on it (M=2) | $jmd_row |"
echo "| daemon's own CPU per command job, µs (disk M=2 / 4 / 8; tmpfs M=2; ext4 with a journal M=2) | $cpu_d / $cpu_d4 / $cpu_d8; $cpu_t; $(f0 "$(med jdisk.2.cpu_us_per_job)") | C loop $(f0 "$(med c.2.cpu_us_per_job)"), Go exec loop $(f0 "$(med go.2.cpu_us_per_job)"), xargs $(f0 "$(med xargs.2.cpu_us_per_job)") (M=2) | < 120 | $(verdict "$cpu_d < 120 && $cpu_t < 120") |"
echo "| in-memory source through the whole dispatcher (library -mode command), x C | $(j "${r_lib[@]}") ($(f0 "$(med lib.2.cpu_us_per_job)") µs/job at M=2) | | >= 0.9 | $(verdict "${r_lib[0]} >= 0.9 && ${r_lib[1]} >= 0.9 && ${r_lib[2]} >= 0.9") |"
echo "| Go re-exec'd child, whole dispatcher / bare Go re-exec loop (P=2) | $reex ($(ratios_rng libreexec.rate reexec.rate); $(f0 "$(med libreexec.rate)") vs $(f0 "$(med reexec.rate)") jobs/s) | 1.00 | >= 0.8 | $(verdict "$reex >= 0.8") |"
echo "| worker jobs through the dispatcher / bare Go pipe worker (P=2) | $wk ($(ratios_rng worker.rate bareworker.rate); $(f0 "$(med worker.rate)") vs $(f0 "$(med bareworker.rate)") jobs/s) | 1.00 | >= 0.7 | $(verdict "$wk >= 0.7") |"
for lang in python php; do
	echo "| command-worker protocol, $lang, daemon / bare Go driver | $(f2 "$(ratio "cw$lang.daemon.rate" "cw$lang.bare.rate")") ($(ratios_rng "cw$lang.daemon.rate" "cw$lang.bare.rate"); $(f0 "$(med "cw$lang.daemon.rate")") vs $(f0 "$(med "cw$lang.bare.rate")") jobs/s; daemon $(f1 "$(med "cw$lang.daemon.cpu_us_per_job")") µs/job) | 1.00 | (issue 11) | |"
done
echo "| idle, empty spool: wake-ups/s, all threads ($WAKE windows) | $idle ($(rng idle.wakeups_per_s)) | C, xargs: 0 | < 0.2 | $(verdict "$idle < 0.2") |"
echo "| idle: listings of incoming/ per window | $lst ($(rng idle.listings)) | 0 | none while inotify works | $(verdict "$lst == 0") |"
echo "| 8 children sleeping: wake-ups/s | $busy ($(rng busy.wakeups_per_s)) | C, xargs: 0 | < 0.5 | $(verdict "$busy < 0.5") |"
echo "| \`jobdaemon submit\` → job started, p50 / p99 ms | $(f2 "$(med latency.submit_p50_ms)") / $sub99 | \`cp\` $(f2 "$(med latency.cp_p50_ms)") / $(f2 "$(med latency.cp_p99_ms)"); rename(2) $(f2 "$(med latency.rename_p50_ms)") / $(f2 "$(med latency.rename_p99_ms)"); CLI start-up alone $(f2 "$(med latency.cli_p50_ms)") / $(f2 "$(med latency.cli_p99_ms)") | p99 < 5 | $(verdict "$sub99 < 5") |"
echo "| reaping K children that exit at once, µs per child, K=10 / 100 / 1000 | $(j "${reap[@]}") | C $(j "${creap[@]}"); ratio $(j "${rr[@]}") | <= 1.3x C at 1000 | $(verdict "${rr[2]} <= 1.3") |"
echo "| SIGTERM → all gone, 8 sleeping children, ms | $(f1 "$(med term.ms)") ($(rng term.ms)) | floor $(f2 "$(med cterm.ms)"); daemon - floor $term_d | within 3 ms of the floor | $(verdict "$term_d <= 3") |"
echo "| idle RSS, MB (VmRSS; threads $(med idle.threads)) | $rss (of which anonymous $rss_anon; the rest is the binary's mapped pages, $(du -m "$b/jobdaemon" | cut -f1) MB on disk) | | < 10 | $(verdict "$rss < 10") |"
echo
echo "Diagnostics of the same rounds (why a target is missed):"
echo
echo "| what | figure | compare |"
echo "|---|---|---|"
echo "| spool on disk, M=2, [pool] cgroups = \"off\", x C | $(f2 "$(ratio diskoff.2.rate c.2.rate)") ($(f0 "$(med diskoff.2.cpu_us_per_job)") µs/job) | cgroups auto: ${r_disk[0]} ($cpu_d µs/job) |"
echo "| reaping 1000 children, cgroups off, µs per child | $(f0 "$(med reapoff.1000.per_child_us)") ($(f2 "$(mratio reapoff.1000.per_child_us creap.1000.per_child_us)")x C, of the medians) | cgroups auto: ${reap[2]} (${rr[2]}x C) |"
echo "| reaping 1000 children: the daemon's own CPU per child from the release to the last record filed (reaping, its cgroup, filing), µs | $(f0 "$(med reap.1000.cpu_us_per_child)") | cgroups off: $(f0 "$(med reapoff.1000.cpu_us_per_child)"); the C loop's children exit on the same 2 cores |"
echo "| SIGTERM → gone, 8 children, cgroups off, ms | $(f1 "$(med termoff.ms)") (daemon - floor $(f1 "$(ratio termoff.ms cterm.ms -)")) | cgroups auto: $(f1 "$(med term.ms)") |"
echo "| spool on ext4 without a journal (loop image in tmpfs, made afresh each round; as the root file systems of some VMs, this one's included, are) right after 20 000 files deleted in done/, x the plain run on it before the delete (M=2) | $md ($(ratios_rng massdel.2.rate ndisk.2.rate); daemon $md_cpu against $(f0 "$(med ndisk.2.cpu_us_per_job)") µs/job) | the same on ext4 with a journal: ${jmd:-not measured} |"
echo "| C floor: CPU µs to create one file, plain / right after 20 000 deletes in its directory | ext4 without a journal $(f1 "$(med create.n.0.cpu_us_per_file)") / $(f1 "$(med create.n.20000.cpu_us_per_file)") | ext4 with a journal $jcreate |"
echo "| exit alone: SIGKILL → reaped, ms | the idle daemon $(f2 "$(med exit.daemon.ms)") | \`sleep\` (C) $(f2 "$(med exit.c.p50_ms)"); a Go program that sleeps $(f2 "$(med exit.go.p50_ms)"); SIGTERM row less the daemon's exit above C's: $(f1 "$(awk -v d="$term_d" -v e="$(med exit.daemon.ms)" -v c="$(med exit.c.p50_ms)" 'BEGIN { if (d == "?" || e == "?" || c == "?") print "?"; else print d - (e - c) }')") |"
echo "| re-exec row: a bare loop whose children catch SIGTERM and link pkg/jobs (bench/reexecfloor), the floor of any child with the library's guarantee | $(f2 "$(ratio reexecfloor.rate reexec.rate)") of the bare loop ($(ratios_rng reexecfloor.rate reexec.rate)) | the dispatcher $(f2 "$(ratio libreexec.rate reexecfloor.rate)") of this floor ($(ratios_rng libreexec.rate reexecfloor.rate)) |"
echo "| re-exec row: the parent's own CPU per job, µs | the dispatcher $(f0 "$(med libreexec.cpu_us_per_job)") | the bare loop $(f0 "$(med reexec.cpu_us_per_job)"); the rest of the gap is the children's |"
echo "| worker row: a job's round trip alone (C, 64 bytes out and 8 back, $NW round trips), CPU µs of both ends | over two pipes (the transport of the bare worker and of a Go worker) $(f2 "$(med pp.pipe.cpu_us_per_round_trip)") | over a SOCK_SEQPACKET pair (a Go worker's channel until December 2026) $(f2 "$(med pp.seqpacket.cpu_us_per_round_trip)") |"
echo "| SIGTERM → all gone, 8 sleeping children, a minimal supervisor timed as the daemon is (harness super: signal to the process, its children killed and reaped, its own exit), ms | C (\`floors super\`) $(f2 "$(med super.c.ms)"); Go (os/signal, exec.Cmd) $(f2 "$(med super.go.ms)") | the daemon $(f1 "$(med term.ms)"): $(f1 "$(ratio term.ms super.c.ms -)") above the C supervisor, $(f1 "$(ratio term.ms super.go.ms -)") above the Go one |"
echo "| peak RSS of a run of the CLI (fork to exit: all packages initialised, nothing else), MB | \`jobdaemon version\` $(mb "$(med start.cli.maxrss_kb)") | a Go program that does nothing $(mb "$(med start.hello.maxrss_kb)"); the idle daemon $rss |"
echo "| start-up alone (fork to exit), p50 / p99 ms | \`jobdaemon version\` $(f2 "$(med start.cli.p50_ms)") / $(f2 "$(med start.cli.p99_ms)") | a Go program that does nothing $(f2 "$(med start.hello.p50_ms)") / $(f2 "$(med start.hello.p99_ms)"); /bin/true $(f2 "$(med start.true.p50_ms)") / $(f2 "$(med start.true.p99_ms)") |"

fi

# ---- where the daemon's time goes --------------------------------------------
if [[ $PROFILE == 1 ]]; then
	echo
	echo "Profile: a CPU profile of the daemon (-tags benchprofile) draining $((N * 5)) jobs, spool on disk, M=2:"
	echo
	echo '```'
	"${H[@]}" spool -bin "$b/jobdaemon-prof" -dir "$tmp/prof/spool" -work "$tmp/prof/work" -m 2 -n $((N * 5)) -cpuprofile "$tmp/cpu.prof"
	go tool pprof -top -nodecount=20 "$b/jobdaemon-prof" "$tmp/cpu.prof" 2>/dev/null | sed -n '4,28p' || true
	echo
	go tool pprof -top -cum -nodecount=80 "$b/jobdaemon-prof" "$tmp/cpu.prof" 2>/dev/null | grep -E 'flat%|jobdaemon|syscall|os\.|runtime\.(schedule|findRunnable|gcBgMarkWorker|mcall|park_m)' | head -30 || true
	echo '```'
	# System calls per job of the daemon's own threads: strace -ff writes a
	# file per task; a child's file holds its execve, a thread's none.
	echo
	echo "System calls of the daemon's own threads per job (strace -f, 500 jobs, M=2; a task that calls execve is a child, left out):"
	echo
	echo '```'
	s="$tmp/strace"
	mkdir -p "$s"
	sp="$tmp/st-spool"
	rm -rf "$sp" && mkdir -p "$sp/incoming"
	for i in $(seq 500); do : >"$sp/incoming/job-$i"; done
	cat >"$tmp/st.toml" <<EOF
[daemon]
pid_file = "$tmp/st.pid"
[job]
command = ["/bin/true"]
max_attempts = 1
[pool]
max_children = 2
[source.spool]
dir = "$sp"
[control]
socket = "$tmp/st.sock"
EOF
	strace -f -ff -o "$s/t" "$b/jobdaemon" run --drain --config "$tmp/st.toml" >/dev/null 2>&1
	main=$(find "$s" -maxdepth 1 -name 't.*' -printf '%f\n' | sort -t. -k2 -n | head -1)
	for f in "$s"/t.*; do
		if [[ $f == "$s/$main" ]] || ! grep -q '^execve(' "$f"; then cat "$f"; fi
	done | grep -oE '^[a-z_0-9]+\(' | sort | uniq -c | sort -rn |
		awk -v n=500 '{ t += $1; l[NR] = sprintf("%7.1f  %s", $1 / n, substr($2, 1, length($2) - 1)) }
			END { printf "%7.1f  all system calls per job\n", t / n; for (i = 1; i <= 25 && i <= NR; i++) print l[i] }' || true
	echo '```'
fi
