<?php
// An example worker: counts the words of each job's payload.
//
// config.toml:
//
//     [job]
//     mode = "worker"
//     command = ["/usr/bin/php", "/opt/app/example.php"]
//
// A payload that says "fail" fails the job.

declare(strict_types=1);

require __DIR__ . '/jobdaemon_worker.php';

// Whatever is loaded here is loaded once per worker, not once per job.
echo 'hello from worker ' . getmypid() . "\n";

JobDaemon\serve(function (JobDaemon\Job $job): void {
    if (trim($job->payload) === 'fail') {
        throw new RuntimeException("job {$job->id} asked to fail");
    }
    $words = str_word_count($job->payload);
    echo "{$job->id} (attempt {$job->attempt}, slot {$job->slot}): $words words\n";
});
