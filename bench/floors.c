/*
 * floors: the C floors of bench/run.sh's rows that forkexec.c does not
 * cover, and the small programs its jobs run.
 *
 *   floors reap K GATE READY   fork+exec K "floors block" children, wait
 *                              until all block, release them at once and
 *                              waitpid each: prints per_child_us, the time
 *                              from the release to the last reap over K
 *   floors term K              fork+exec K "sleep 1000", wait until each
 *                              has exec'd, SIGTERM each and waitpid all:
 *                              prints ms, from the first kill to the last
 *                              reap
 *   floors super K             the smallest supervisor: fork+exec K
 *                              "sleep 1000", wait for SIGTERM, then
 *                              SIGTERM each child, waitpid all and exit
 *                              (timed from outside, as the daemon is, by
 *                              "harness super")
 *   floors pingpong KIND N     N round trips (64 bytes out, 8 back) with
 *                              a forked child over two pipes (KIND pipe,
 *                              as the bare pipe worker and a Go worker's
 *                              channel) or one SOCK_SEQPACKET pair
 *                              (seqpacket, the Go worker's channel until
 *                              December 2026): prints the CPU time of
 *                              both processes per round trip
 *   floors create DIR N DEL    create and delete DEL files in DIR, wait
 *                              1.1 s, then create N empty files there: prints
 *                              the process's CPU per file created (what any
 *                              program pays for an inode, for the mass
 *                              delete row)
 *   floors block GATE READY    a job: open the FIFO GATE for reading, say
 *                              so with a byte on the FIFO READY, and exit
 *                              when GATE reaches end of file (its writer
 *                              closed it: all blocked jobs end together)
 *   floors stamp FIFO          a job: write the CLOCK_MONOTONIC time of its
 *                              start, in ns, as one line to FIFO
 *
 * Build: gcc -O2 -o floors floors.c
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static int block(const char *gate, const char *ready)
{
	char b;
	int g = open(gate, O_RDONLY);
	int r;

	if (g < 0)
		die("floors block: open gate");
	r = open(ready, O_WRONLY);
	if (r < 0 || write(r, "x", 1) != 1)
		die("floors block: ready");
	close(r);
	for (;;) {
		ssize_t n = read(g, &b, 1);

		if (n > 0 || (n < 0 && errno == EINTR))
			continue;
		return 0;
	}
}

static int stamp(const char *fifo)
{
	struct timespec ts;
	char line[32];
	int fd, n;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	n = snprintf(line, sizeof line, "%lld\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
	fd = open(fifo, O_WRONLY);
	if (fd < 0 || write(fd, line, n) != n)
		die("floors stamp");
	return 0;
}

static int reap(long k, const char *self, const char *gate, const char *ready)
{
	int g, r;
	long i, got = 0;
	char buf[4096];
	double t0;

	unlink(gate);
	unlink(ready);
	if (mkfifo(gate, 0600) || mkfifo(ready, 0600))
		die("floors reap: mkfifo");
	/* O_RDWR: both stay open without waiting for the other end. */
	g = open(gate, O_RDWR);
	r = open(ready, O_RDWR);
	if (g < 0 || r < 0)
		die("floors reap: open");
	for (i = 0; i < k; i++) {
		pid_t pid = fork();

		if (pid < 0)
			die("floors reap: fork");
		if (pid == 0) {
			close(g);
			close(r);
			execl(self, "floors", "block", gate, ready, (char *)NULL);
			_exit(127);
		}
	}
	while (got < k) {
		ssize_t n = read(r, buf, sizeof buf);

		if (n < 0 && errno != EINTR)
			die("floors reap: read ready");
		if (n > 0)
			got += n;
	}
	t0 = now();
	close(g); /* end of file for every child at once */
	for (i = 0; i < k; i++) {
		int st;

		if (waitpid(-1, &st, 0) < 0) {
			if (errno == EINTR) {
				i--;
				continue;
			}
			die("floors reap: waitpid");
		}
	}
	printf("children=%ld per_child_us=%.1f\n", k, (now() - t0) * 1e6 / (double)k);
	unlink(gate);
	unlink(ready);
	return 0;
}

/* execd reports whether pid runs "sleep" already, not a copy of us. */
static int execd(pid_t pid)
{
	char path[64], comm[64] = "";
	FILE *f;

	snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	if (!fgets(comm, sizeof comm, f))
		comm[0] = '\0';
	fclose(f);
	return strncmp(comm, "sleep", 5) == 0;
}

/*
 * sleepers forks and execs k "sleep 1000" children, with the signals in
 * unblock unblocked in each (super blocks SIGTERM in itself).
 */
static pid_t *sleepers(long k, const sigset_t *unblock)
{
	pid_t *pids = calloc((size_t)k, sizeof *pids);
	long i;

	if (!pids)
		die("floors: calloc");
	for (i = 0; i < k; i++) {
		pids[i] = fork();
		if (pids[i] < 0)
			die("floors: fork");
		if (pids[i] == 0) {
			if (unblock)
				sigprocmask(SIG_UNBLOCK, unblock, NULL);
			execl("/bin/sleep", "sleep", "1000", (char *)NULL);
			_exit(127);
		}
	}
	return pids;
}

/* stopall sends SIGTERM to each child, then reaps them all. */
static void stopall(const pid_t *pids, long k)
{
	long i;

	for (i = 0; i < k; i++)
		kill(pids[i], SIGTERM);
	for (i = 0; i < k; i++) {
		int st;

		while (waitpid(pids[i], &st, 0) < 0 && errno == EINTR)
			;
	}
}

static int term(long k)
{
	pid_t *pids = sleepers(k, NULL);
	long i;
	double t0;

	for (i = 0; i < k; i++)
		while (!execd(pids[i]))
			usleep(1000);
	usleep(100000); /* asleep in nanosleep, as the daemon's jobs will be */
	t0 = now();
	stopall(pids, k);
	printf("children=%ld ms=%.3f\n", k, (now() - t0) * 1e3);
	free(pids);
	return 0;
}

/*
 * super is term as a process of its own that an outside SIGTERM stops:
 * the daemon's row measures the signal's delivery and the daemon's own
 * exit too, which term's in-process clock leaves out.
 */
static int super(long k)
{
	sigset_t term;
	pid_t *pids;

	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	if (sigprocmask(SIG_BLOCK, &term, NULL))
		die("floors super: sigprocmask");
	pids = sleepers(k, &term);
	while (sigwaitinfo(&term, NULL) < 0)
		if (errno != EINTR)
			die("floors super: sigwaitinfo");
	stopall(pids, k);
	free(pids);
	return 0;
}

/*
 * pingpong prices the transport of a worker's job and answer alone, what
 * no Go code adds to: two pipes, as the worker row's bare baseline and the
 * library's Go workers use, against the SOCK_SEQPACKET socket pair those
 * used before (the reason they changed).
 */
static int pingpong(const char *kind, long n)
{
	int out[2], back[2];
	char buf[256];
	struct rusage self, kids;
	pid_t pid;
	long i;
	int st;

	if (strcmp(kind, "seqpacket") == 0) {
		int sv[2];

		if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv))
			die("floors pingpong: socketpair");
		out[0] = back[1] = sv[1];
		out[1] = back[0] = sv[0];
	} else if (strcmp(kind, "pipe") == 0) {
		if (pipe(out) || pipe(back))
			die("floors pingpong: pipe");
	} else {
		fprintf(stderr, "floors pingpong: pipe or seqpacket, not %s\n", kind);
		return 2;
	}
	memset(buf, 'x', sizeof buf);
	pid = fork();
	if (pid < 0)
		die("floors pingpong: fork");
	if (pid == 0) {
		for (i = 0; i < n; i++)
			if (read(out[0], buf, sizeof buf) <= 0 || write(back[1], buf, 8) != 8)
				_exit(1);
		_exit(0);
	}
	for (i = 0; i < n; i++)
		if (write(out[1], buf, 64) != 64 || read(back[0], buf, sizeof buf) <= 0)
			die("floors pingpong: round trip");
	if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		die("floors pingpong: child");
	getrusage(RUSAGE_SELF, &self);
	getrusage(RUSAGE_CHILDREN, &kids);
	printf("kind=%s round_trips=%ld cpu_us_per_round_trip=%.2f\n", kind, n,
	       ((double)(self.ru_utime.tv_sec + self.ru_stime.tv_sec + kids.ru_utime.tv_sec + kids.ru_stime.tv_sec) +
		(double)(self.ru_utime.tv_usec + self.ru_stime.tv_usec + kids.ru_utime.tv_usec + kids.ru_stime.tv_usec) / 1e6) *
		       1e6 / (double)n);
	return 0;
}

static double cpu(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* touch creates n empty files dir/prefix.0, dir/prefix.1, ... */
static void touch(const char *dir, const char *prefix, long n)
{
	char path[4096];
	long i;

	for (i = 0; i < n; i++) {
		int fd;

		snprintf(path, sizeof path, "%s/%s.%ld", dir, prefix, i);
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0640);
		if (fd < 0)
			die("floors create: create");
		close(fd);
	}
}

/*
 * create times file creation in dir after del files were deleted there.
 * The pause matters: ext4 without a journal skips an inode freed in an
 * earlier second than the current one, not in the same second.
 */
static int create(const char *dir, long n, long del)
{
	char path[4096];
	long i;
	double c0;

	if (mkdir(dir, 0750) && errno != EEXIST)
		die("floors create: mkdir");
	touch(dir, "del", del);
	sync();
	for (i = 0; i < del; i++) {
		snprintf(path, sizeof path, "%s/del.%ld", dir, i);
		if (unlink(path))
			die("floors create: unlink");
	}
	usleep(1100000);
	c0 = cpu();
	touch(dir, "new", n);
	printf("files=%ld deleted_before=%ld cpu_us_per_file=%.1f\n", n, del, (cpu() - c0) * 1e6 / (double)n);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && strcmp(argv[1], "block") == 0)
		return block(argv[2], argv[3]);
	if (argc == 3 && strcmp(argv[1], "stamp") == 0)
		return stamp(argv[2]);
	if (argc == 5 && strcmp(argv[1], "reap") == 0)
		return reap(atol(argv[2]), "/proc/self/exe", argv[3], argv[4]);
	if (argc == 3 && strcmp(argv[1], "term") == 0)
		return term(atol(argv[2]));
	if (argc == 3 && strcmp(argv[1], "super") == 0)
		return super(atol(argv[2]));
	if (argc == 4 && strcmp(argv[1], "pingpong") == 0)
		return pingpong(argv[2], atol(argv[3]));
	if (argc == 5 && strcmp(argv[1], "create") == 0)
		return create(argv[2], atol(argv[3]), atol(argv[4]));
	fprintf(stderr, "usage: floors reap K GATE READY | term K | super K | pingpong KIND N | create DIR N DEL | block GATE READY | stamp FIFO\n");
	return 2;
}
