<?php
// The test handler of the PHP reference worker; see workers_test.go.

declare(strict_types=1);

require __DIR__ . '/../php/jobdaemon_worker.php';

JobDaemon\serve(function (JobDaemon\Job $job): void {
    [$verb, $arg] = array_pad(explode(':', $job->payload, 2), 2, '');
    switch ($verb) {
        case 'ok':
            return;
        case 'say':
            echo "$arg\n";
            fwrite(STDERR, "err:$arg\n");
            return;
        case 'fail':
            throw new RuntimeException($arg);
        case 'exit':
            exit((int) $arg);
        case 'hex':
            echo bin2hex($arg) . "\n";
            return;
        case 'job':
            echo json_encode(['id' => $job->id, 'attempt' => $job->attempt, 'slot' => $job->slot,
                'path' => $job->path, 'meta' => (object) $job->meta]) . "\n";
            return;
        default:
            throw new InvalidArgumentException("unknown test job $verb");
    }
});
