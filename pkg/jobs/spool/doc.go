// Package spool is a job source over a directory: every file that lands in
// its incoming/ directory is a job, and no file is ever lost or overwritten.
// It is the embedded default source of the jobdaemon binary, and knows
// nothing of the pool, systemd or configuration files: a [Spool] is a
// [jobs.Source], a [jobs.Acker] and a [jobs.Waker].
//
// # Layout
//
//	DIR/
//	  .lock                       flock(2)ed while a Spool is open
//	  .claims                     the claims journal: which files of running/ are jobs
//	  incoming/                   jobs waiting; anyone may drop files here
//	    report.csv                a job: its name is its ID
//	    .report.csv.meta.json     retry state of report.csv (attempt 2 and later)
//	    .jobdaemon-tmp-123456     a Submit in progress
//	  running/                    claimed jobs, one file per running job
//	    photo.jpg                 passed to the command as {path} and stdin
//	    .photo.jpg.meta.json      its attempt number (attempt 2 and later)
//	  done/                       jobs that succeeded
//	    invoice.pdf
//	    invoice.pdf.result.json   its Record
//	  failed/                     jobs that failed their last attempt or were refused
//	    data.bin
//	    data.bin.result.json
//
// The four directories are created 0750 (less the umask) and must be real
// directories on one file system, since jobs move between them by
// rename(2). Files the spool writes are 0640 (less the umask). Open
// refuses a spool whose root, running/, done/ or failed/ any user may
// write to; incoming/ may be a world-writable drop box (with the sticky
// bit, or a warning is logged), because what lands there is checked only
// after it has been claimed into running/, where nobody else can swap it.
//
// Names starting with '.' are never jobs: they are temporary files and
// sidecars. A writer should create a job elsewhere on the same file
// system, or under a hidden name in incoming/, and rename it in, as
// [Spool.Submit] and [SubmitDir] do. A file written in place may be
// claimed before its writer has finished.
//
// # The life of a job
//
//  1. NextJob takes the oldest waiting file (by modification time, then by
//     name) and claims it by renaming it into running/. A file that has
//     vanished meanwhile is skipped. A file that is not a regular file
//     (symbolic link, directory, FIFO, device, socket), is larger than
//     Options.MaxPayload, or whose name holds control characters, bidi
//     controls or invalid UTF-8 or is longer than 243 bytes, is refused:
//     moved, never followed or opened, to failed/ with the reason in its
//     record; a bad name is filed there cut, or with its bad characters
//     replaced by '_'. A directory is refused like any other file rather
//     than left in incoming/, so that every name there is on its way.
//  2. The job runs; the command reads running/NAME, or the file that
//     [Spool.Open] opens for it, which is how a job that runs as a user
//     of its own gets it (on its standard input: it cannot open
//     running/).
//  3. Done files it: after a success into done/, after a failure back into
//     incoming/ with a not-before time (see Options.Backoff) while attempts
//     are left, else into failed/. A Record, NAME.result.json, is written
//     beside the job in done/ and failed/. A job whose Result is
//     Interrupted (the daemon stopped it) or NotStarted (the daemon could
//     not start it) goes back into incoming/ at once, with the same
//     attempt number.
//
// Open puts back into incoming/ whatever a stopped or crashed daemon left
// in running/, with its attempt number raised by one, so that a job runs at
// least once, and may run again after a crash. Only files that a claim
// put there go back: each claim is appended to the claims journal before
// its rename, and a file of running/ that the journal does not know (a
// file that a job wrote beside its input) is filed in failed/ as "not a
// job", never run. A job that removed or replaced its own file while it
// ran is recorded as it ended, with a record but no job file (see Done).
//
// # Retry state
//
// A job's first attempt needs no state. From the second on, the attempt
// number and not-before time live in a hidden JSON sidecar beside the job
// file, .NAME.meta.json, in incoming/ or running/:
//
//	{"attempt":2,"not_before":"2025-01-02T15:04:05.123Z","inode":1837,"last_result":"exit 3"}
//
// attempt is the number of the job's next run (or current run, in
// running/). A sidecar counts only while inode matches the job file's
// inode number, which rename(2) keeps: a sidecar orphaned by a crash
// between two steps of a move can never be mistaken for the state of
// another file of the same name.
//
// # Name clashes
//
// Nothing is overwritten: every move uses renameat2(RENAME_NOREPLACE). A
// job whose name is taken where it goes gets a new name, with a "~" and the
// time inserted before its extension: report.csv becomes
// report~20250102T150405Z.csv (then -2, -3 ... for further clashes); its
// record's file field says so. A file in incoming/ whose name matches a
// running job waits until that job has been filed.
//
// # Waking up
//
// inotify reports files closed after writing or moved into incoming/; the
// spool then wakes the dispatcher through Wake. A rescan every
// Options.RescanInterval covers what inotify missed (a queue overflow, a
// hard link, a file made by mkfifo). Without inotify the spool only polls.
package spool
