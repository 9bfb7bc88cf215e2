<?php
// The trivial job of bench/workers.sh: the PHP reference worker with a
// handler that does nothing.

declare(strict_types=1);

require __DIR__ . '/../../examples/workers/php/jobdaemon_worker.php';

JobDaemon\serve(function (JobDaemon\Job $job): void {
});
