<?php
// Run a PHP callable as a jobdaemon command worker.
//
//     require __DIR__ . '/jobdaemon_worker.php';
//
//     JobDaemon\serve(function (JobDaemon\Job $job): void {
//         echo "working on {$job->id}\n";         // stdout and stderr are the job's log
//         if ($job->payload === '') {
//             throw new InvalidArgumentException('empty job'); // the job fails
//         }
//     });
//
// With [job] mode = "worker", jobdaemon starts the script once per slot and
// keeps it: each job arrives on standard input as one JSON line, and serve()
// answers each on file descriptor 3, {"id": ..., "ok": true} or
// {"id": ..., "ok": false, "error": "..."}. A handler that returns succeeds;
// one that throws fails, with "Class: message" as the job's error and the
// exception in its log. serve() returns when standard input closes (the
// daemon retires the worker). The protocol: docs/WORKER-PROTOCOL.md.

declare(strict_types=1);

namespace JobDaemon;

/** One job. $payload is bytes; $path is set for spool jobs. */
final class Job
{
    public function __construct(
        public readonly string $id,
        public readonly int $attempt,
        public readonly int $slot,
        public readonly string $payload,
        public readonly ?string $path,
        /** @var array<string, string> */
        public readonly array $meta,
    ) {
    }
}

/** Runs $handler on each job from standard input until it closes. */
function serve(callable $handler): void
{
    $answers = answer_stream();
    while (($line = fgets(STDIN)) !== false) {
        $job = decode($line);
        try {
            $handler($job);
            $answer = ['id' => $job->id, 'ok' => true];
        } catch (\Throwable $e) {
            fwrite(STDERR, $e . "\n");
            $answer = ['id' => $job->id, 'ok' => false, 'error' => get_class($e) . ': ' . $e->getMessage()];
        }
        // The job's output goes out before its answer.
        fflush(STDOUT);
        fflush(STDERR);
        $json = json_encode($answer, JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE | JSON_PARTIAL_OUTPUT_ON_ERROR);
        if (fwrite($answers, $json . "\n") === false || !fflush($answers)) {
            fail_setup('cannot write the answer on file descriptor 3');
        }
    }
}

/**
 * Opens fd 3. Outside a worker, fd 3 is free when PHP starts, and PHP
 * itself may open a script there: that is not an answer pipe either.
 *
 * @internal
 * @return resource
 */
function answer_stream()
{
    $answers = @fopen('php://fd/3', 'wb');
    $st = $answers === false ? false : fstat($answers);
    if ($st !== false) {
        foreach (get_included_files() as $file) {
            $f = @stat($file);
            if ($f !== false && $f['dev'] === $st['dev'] && $f['ino'] === $st['ino']) {
                $st = false;
                break;
            }
        }
    }
    if ($st === false) {
        fail_setup('file descriptor 3 is not open: this program is a jobdaemon worker, '
            . 'started with [job] mode = "worker"');
    }
    return $answers;
}

/** @internal */
function decode(string $line): Job
{
    try {
        $j = json_decode($line, true, 64, JSON_THROW_ON_ERROR);
        if (!is_array($j) || !is_string($j['id'] ?? null) || !is_string($j['payload'] ?? null)) {
            throw new \UnexpectedValueException('no "id" or "payload"');
        }
        $payload = base64_decode($j['payload'], true);
        if ($payload === false) {
            throw new \UnexpectedValueException('the payload is not base64');
        }
        return new Job($j['id'], (int) ($j['attempt'] ?? 0), (int) ($j['slot'] ?? 0), $payload,
            $j['path'] ?? null, $j['meta'] ?? []);
    } catch (\Throwable $e) {
        // The daemon wrote something else than a job: nothing to answer.
        fail_setup('not a job line (' . get_class($e) . ': ' . $e->getMessage() . '): ' . substr($line, 0, 200));
    }
}

/** @internal */
function fail_setup(string $message): never
{
    fwrite(STDERR, "jobdaemon_worker: $message\n");
    exit(2);
}
