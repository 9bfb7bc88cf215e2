/*
 * forkexec: the C baseline for the pool's command-child speed target.
 *
 * Usage: forkexec N P
 *
 * Runs N jobs of /bin/true with at most P alive at once and prints
 *   jobs=N seconds=S rate=R/s
 * The pool must reach >= 0.9x this rate for command children, so this is
 * deliberately the cheapest honest loop: plain fork+execv, no shell, no pipes,
 * and one waitpid(-1) per job so whichever child finishes first frees its slot
 * (waiting on a specific pid would serialize on the slowest child).
 *
 * Build: gcc -O2 -o forkexec forkexec.c
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;

	/* Monotonic: a wall-clock step (NTP) must not skew a short benchmark. */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long parse_positive(const char *s, const char *what)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v <= 0) {
		fprintf(stderr, "forkexec: %s must be a positive integer, got %s\n",
			what, s);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	char *const child_argv[] = { "true", NULL };
	long n, p, started = 0, running = 0, done = 0, failed = 0;
	double t0, secs;

	if (argc != 3) {
		fprintf(stderr, "usage: forkexec N P\n");
		return 2;
	}
	n = parse_positive(argv[1], "N");
	p = parse_positive(argv[2], "P");

	t0 = now();
	while (done < n) {
		while (running < p && started < n) {
			pid_t pid = fork();

			if (pid < 0) {
				perror("forkexec: fork");
				return 1;
			}
			if (pid == 0) {
				execv("/bin/true", child_argv);
				/* _exit: don't run the parent's atexit/stdio flush twice. */
				_exit(127);
			}
			started++;
			running++;
		}

		int status;
		pid_t pid = waitpid(-1, &status, 0);

		if (pid < 0) {
			if (errno == EINTR)
				continue;
			perror("forkexec: waitpid");
			return 1;
		}
		running--;
		done++;
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			failed++;
	}
	secs = now() - t0;

	printf("jobs=%ld seconds=%.3f rate=%.0f/s\n", n, secs, (double)n / secs);
	if (failed) {
		/* A rate over failed execs would flatter the baseline; refuse it. */
		fprintf(stderr, "forkexec: %ld of %ld jobs failed\n", failed, n);
		return 1;
	}
	return 0;
}
