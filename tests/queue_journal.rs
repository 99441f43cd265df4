//! The queue and its journal through the library API: retry with backoff, priorities,
//! cancelling, crash recovery (orphaned running jobs and their temp files), missing kinds.
use atelier::jobs::{
    JobEvent, JobFilter, JobKind, JobOptions, JobState, JobStore, NewJob, Priority, Queue,
    QueueSettings, RunContext, RunError, Runner, Runners, SqliteStore, WorkerInfo,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// Fails with a transient error `fail_first` times, then writes `NAME.out`.
struct Flaky {
    fail_first: u32,
    calls: AtomicU32,
}

impl Runner for Flaky {
    fn run(&self, job: &atelier::jobs::Job, ctx: &RunContext) -> Result<Vec<PathBuf>, RunError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.fail_first {
            return Err(RunError::Transient("the disk is having a bad day".into()));
        }
        let out = job.output_dir().join(format!(
            "{}.out",
            job.input.file_name().unwrap().to_string_lossy()
        ));
        Ok(vec![ctx.write(&out, b"ok\n")?])
    }
}

/// Blocks until released (or cancelled), recording the order jobs start in.
struct Gate {
    open: Arc<AtomicBool>,
    order: Arc<Mutex<Vec<PathBuf>>>,
}

impl Runner for Gate {
    fn run(&self, job: &atelier::jobs::Job, ctx: &RunContext) -> Result<Vec<PathBuf>, RunError> {
        self.order.lock().unwrap().push(job.input.clone());
        while !self.open.load(Ordering::SeqCst) {
            ctx.check_cancel()?;
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Vec::new())
    }
}

fn settings(backoff_ms: u64, attempts: u32) -> QueueSettings {
    QueueSettings {
        workers: 1,
        max_attempts: attempts,
        retry_backoff: Duration::from_millis(backoff_ms),
        poll: Duration::from_millis(50),
        max_crashes: 2,
        lease: Duration::from_secs(30),
        device: "cpu".into(),
    }
}

/// A worker whose lease runs out at once, like a process that died right after its claim.
fn dead_worker() -> WorkerInfo {
    WorkerInfo::this_process("cpu")
}

fn touch(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, name).unwrap();
    p
}

/// Events until `stop` says so (or a generous safety limit, to fail instead of hanging).
fn collect(
    rx: &mpsc::Receiver<JobEvent>,
    mut stop: impl FnMut(&[JobEvent]) -> bool,
) -> Vec<JobEvent> {
    let mut events = Vec::new();
    while !stop(&events) {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(e) => events.push(e),
            Err(_) => panic!("no event for 60 s; so far: {events:#?}"),
        }
    }
    events
}

fn finished(events: &[JobEvent], n: usize) -> bool {
    events
        .iter()
        .filter(|e| {
            matches!(
                e,
                JobEvent::Done { .. }
                    | JobEvent::Cancelled { .. }
                    | JobEvent::Failed { retry_at: None, .. }
            )
        })
        .count()
        >= n
}

#[test]
fn transient_failures_retry_with_doubling_backoff_then_succeed_or_land_in_failed() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("q.sqlite")).unwrap();
    let mut runners = Runners::new();
    // Two failures, then success: three attempts.
    runners.insert(
        JobKind::Checksum,
        Arc::new(Flaky {
            fail_first: 2,
            calls: AtomicU32::new(0),
        }),
    );
    let backoff = 150;
    let queue = Queue::open(Box::new(store), runners, settings(backoff, 3)).unwrap();
    let rx = queue.subscribe();
    let input = touch(dir.path(), "a.bin");
    let id = queue
        .enqueue(
            JobKind::Checksum,
            &input,
            JobOptions::default(),
            Priority::BATCH,
        )
        .unwrap();
    let events = collect(&rx, |e| finished(e, 1));
    let failures: Vec<i64> = events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Failed { retry_at, .. } => *retry_at,
            _ => None,
        })
        .collect();
    assert_eq!(failures.len(), 2, "{events:#?}");
    let job = queue.get(id).unwrap().unwrap();
    assert_eq!(job.state, JobState::Done);
    assert_eq!(job.attempts, 3);
    assert_eq!(job.outputs, vec![dir.path().join("a.bin.out")]);
    assert_eq!(
        std::fs::read(dir.path().join("a.bin.out")).unwrap(),
        b"ok\n"
    );
    // The last attempt started no earlier than the second failure's retry time.
    assert!(
        job.started_at.unwrap() >= failures[1],
        "{job:?} {failures:?}"
    );
    queue.shutdown();

    // Always failing: lands in `failed` after max_attempts with the error, naming the file.
    let store = SqliteStore::open(&dir.path().join("q2.sqlite")).unwrap();
    let mut runners = Runners::new();
    runners.insert(
        JobKind::Checksum,
        Arc::new(Flaky {
            fail_first: u32::MAX,
            calls: AtomicU32::new(0),
        }),
    );
    let queue = Queue::open(Box::new(store), runners, settings(backoff, 3)).unwrap();
    let rx = queue.subscribe();
    let id = queue
        .enqueue(
            JobKind::Checksum,
            &input,
            JobOptions::default(),
            Priority::BATCH,
        )
        .unwrap();
    let events = collect(&rx, |e| finished(e, 1));
    let retry_at: Vec<Option<i64>> = events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Failed { retry_at, .. } => Some(*retry_at),
            _ => None,
        })
        .collect();
    assert_eq!(retry_at.len(), 3);
    assert!(retry_at[0].is_some() && retry_at[1].is_some() && retry_at[2].is_none());
    let job = queue.get(id).unwrap().unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.attempts, 3);
    let error = job.error.unwrap();
    assert!(
        error.contains("a.bin") && error.contains("bad day"),
        "{error}"
    );
    assert_eq!(queue.list(&JobFilter::default()).unwrap().len(), 1);
    queue.shutdown();
    assert!(!dir.path().join(".a.bin.out.atelier-job1.tmp").exists());
}

#[test]
fn interactive_work_goes_ahead_and_cancel_works_queued_and_running() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("q.sqlite")).unwrap();
    let open = Arc::new(AtomicBool::new(false));
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut runners = Runners::new();
    runners.insert(
        JobKind::Checksum,
        Arc::new(Gate {
            open: open.clone(),
            order: order.clone(),
        }),
    );
    let queue = Queue::open(Box::new(store), runners, settings(10, 3)).unwrap();
    let rx = queue.subscribe();
    let first = touch(dir.path(), "first");
    let a = queue
        .enqueue(
            JobKind::Checksum,
            &first,
            JobOptions::default(),
            Priority::BATCH,
        )
        .unwrap();
    // Wait until the first job holds the only worker.
    collect(&rx, |e| {
        e.iter().any(|e| matches!(e, JobEvent::Started { .. }))
    });
    let batch: Vec<_> = ["b1", "b2", "b3"]
        .iter()
        .map(|n| {
            queue
                .enqueue(
                    JobKind::Checksum,
                    &touch(dir.path(), n),
                    JobOptions::default(),
                    Priority::BATCH,
                )
                .unwrap()
        })
        .collect();
    let urgent = touch(dir.path(), "urgent");
    queue
        .enqueue(
            JobKind::Checksum,
            &urgent,
            JobOptions::default(),
            Priority::INTERACTIVE,
        )
        .unwrap();
    // Cancel a queued one, and promote another.
    assert!(queue.cancel(batch[1]).unwrap());
    assert!(queue.reprioritize(batch[2], Priority(5)).unwrap());
    // Cancel the running one: it stops at its next check.
    assert!(queue.cancel(a).unwrap());
    let events = collect(&rx, |e| e.contains(&JobEvent::Cancelled { id: a }));
    assert!(events.contains(&JobEvent::Cancelled { id: batch[1] }));
    open.store(true, Ordering::SeqCst);
    collect(&rx, |e| finished(e, 3));
    let got: Vec<String> = order
        .lock()
        .unwrap()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(got, ["first", "urgent", "b3", "b1"]);
    let states: Vec<(String, JobState)> = queue
        .list(&JobFilter::default())
        .unwrap()
        .into_iter()
        .map(|j| {
            (
                j.input.file_name().unwrap().to_string_lossy().into_owned(),
                j.state,
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("first".into(), JobState::Cancelled),
            ("b1".into(), JobState::Done),
            ("b2".into(), JobState::Cancelled),
            ("b3".into(), JobState::Done),
            ("urgent".into(), JobState::Done),
        ]
    );
    // A cancelled job can be retried.
    assert!(queue.retry(batch[1]).unwrap());
    collect(&rx, |e| finished(e, 1));
    assert_eq!(queue.get(batch[1]).unwrap().unwrap().state, JobState::Done);
    queue.shutdown();
}

#[test]
fn a_job_left_running_by_a_crash_is_rerun_and_its_temp_files_removed() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("q.sqlite");
    let input = touch(dir.path(), "a.bin");
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    // A process (pid 0 is never an atelier) claimed the job and died mid-write.
    let mut store = SqliteStore::open(&journal).unwrap();
    let job = store
        .insert(&NewJob {
            kind: JobKind::Checksum,
            input: input.clone(),
            options: JobOptions {
                output_dir: Some(out_dir.clone()),
                ..JobOptions::default()
            },
            priority: Priority::BATCH,
            max_attempts: 3,
            input_size: None,
            input_mtime_ns: None,
        })
        .unwrap();
    let claimed = store
        .claim_next(&dead_worker(), Duration::ZERO)
        .unwrap()
        .unwrap();
    assert_eq!((claimed.id, claimed.state), (job.id, JobState::Running));
    let temp = atelier::jobs::temp_path(job.id, &out_dir.join("a.sha256"));
    std::fs::write(&temp, "half").unwrap();
    // Another job's temp file is not ours to remove.
    let other = atelier::jobs::temp_path(
        atelier::jobs::JobId(job.id.0 + 100),
        &out_dir.join("b.sha256"),
    );
    std::fs::write(&other, "other").unwrap();
    drop(store);

    let mut runners = Runners::new();
    runners.insert(
        JobKind::Checksum,
        Arc::new(atelier::jobs::runners::ChecksumRunner),
    );
    let queue = Queue::open(
        Box::new(SqliteStore::open(&journal).unwrap()),
        runners,
        settings(10, 3),
    )
    .unwrap();
    let rx = queue.subscribe();
    // The requeue happened before the workers started, and removed the temp file.
    collect(&rx, |e| finished(e, 1));
    let job = queue.get(job.id).unwrap().unwrap();
    assert_eq!(job.state, JobState::Done);
    assert_eq!(job.attempts, 1, "a crash does not use up an attempt");
    assert_eq!(job.crashes, 1, "but it counts as a crash");
    assert!(!temp.exists());
    assert!(other.exists());
    let sha = std::fs::read_to_string(out_dir.join("a.sha256")).unwrap();
    // sha256("a.bin"), from coreutils' sha256sum.
    let expected = std::process::Command::new("sha256sum")
        .arg(&input)
        .output()
        .unwrap();
    let expected = String::from_utf8(expected.stdout).unwrap();
    assert_eq!(
        sha.split_whitespace().next(),
        expected.split_whitespace().next()
    );
    assert_eq!(job.outputs, vec![out_dir.join("a.sha256")]);
    queue.shutdown();
}

#[test]
fn a_job_that_died_after_recording_an_output_completes_on_its_rerun() {
    // The rerun writes the same output again; the journal must take that as the job's own
    // (it took it for a lost lease, and the job stayed `running` after every retry).
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("q.sqlite");
    let input = touch(dir.path(), "a.bin");
    let out = dir.path().join("a.sha256");
    let mut store = SqliteStore::open(&journal).unwrap();
    let job = store
        .insert(&NewJob {
            kind: JobKind::Checksum,
            input: input.clone(),
            options: JobOptions::default(),
            priority: Priority::BATCH,
            max_attempts: 3,
            input_size: None,
            input_mtime_ns: None,
        })
        .unwrap();
    let claimed = store
        .claim_next(&dead_worker(), Duration::ZERO)
        .unwrap()
        .unwrap();
    let claim = claimed.claim.clone().unwrap();
    std::fs::write(&out, "written by the run that died\n").unwrap();
    assert!(store.record_output(job.id, &claim, &out).unwrap());
    assert!(
        store.record_output(job.id, &claim, &out).unwrap(),
        "recording a path twice in one run still holds the claim"
    );
    assert!(!store.record_output(job.id, "not-the-claim", &out).unwrap());
    drop(store);

    let mut runners = Runners::new();
    runners.insert(
        JobKind::Checksum,
        Arc::new(atelier::jobs::runners::ChecksumRunner),
    );
    let queue = Queue::open(
        Box::new(SqliteStore::open(&journal).unwrap()),
        runners,
        settings(10, 3),
    )
    .unwrap();
    let rx = queue.subscribe();
    collect(&rx, |e| finished(e, 1));
    let job = queue.get(job.id).unwrap().unwrap();
    assert_eq!((job.state, job.crashes), (JobState::Done, 1), "{job:#?}");
    let expected = std::process::Command::new("sha256sum")
        .arg(&input)
        .output()
        .unwrap();
    let expected = String::from_utf8(expected.stdout).unwrap();
    assert_eq!(job.outputs, vec![out.clone()]);
    let sha = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        sha.split_whitespace().next(),
        expected.split_whitespace().next()
    );
    queue.shutdown();
}

#[test]
fn a_kind_without_a_runner_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("q.sqlite")).unwrap();
    let queue = Queue::open(Box::new(store), Runners::new(), settings(10, 3)).unwrap();
    let rx = queue.subscribe();
    let prompt = touch(dir.path(), "cat.prompt");
    let id = queue
        .enqueue(
            JobKind::Generate,
            &prompt,
            JobOptions::default(),
            Priority::BATCH,
        )
        .unwrap();
    collect(&rx, |e| finished(e, 1));
    let job = queue.get(id).unwrap().unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.attempts, 1, "a missing kind is not retried");
    let error = job.error.unwrap();
    assert!(
        error.contains("not available in this build") && error.contains("cat.prompt"),
        "{error}"
    );
    queue.shutdown();
}

/// A journal at `journal` with one job for `input` claimed by a process that died (pid 0 is
/// never an atelier), `crashes` times over; the job's id.
fn orphan(journal: &Path, input: &Path, crashes: u32, cancel: bool) -> atelier::jobs::JobId {
    let mut store = SqliteStore::open(journal).unwrap();
    let job = store
        .insert(&NewJob {
            kind: JobKind::Checksum,
            input: input.to_path_buf(),
            options: JobOptions::default(),
            priority: Priority::BATCH,
            max_attempts: 3,
            input_size: None,
            input_mtime_ns: None,
        })
        .unwrap();
    for n in 0..crashes {
        let claimed = store.claim_next(&dead_worker(), Duration::ZERO).unwrap();
        assert_eq!(claimed.map(|j| j.id), Some(job.id));
        if cancel {
            store.cancel(job.id, atelier::jobs::now_ms()).unwrap();
        }
        if n + 1 < crashes {
            let back = store.requeue_expired(99, &mut |_| {}).unwrap();
            assert_eq!(back.len(), 1);
            assert_eq!(back[0].crashes, n + 1);
        }
    }
    job.id
}

#[test]
fn a_job_whose_process_dies_twice_fails_naming_the_crashes_and_the_queue_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("q.sqlite");
    let poison = touch(dir.path(), "poison.bin");
    let good = touch(dir.path(), "good.bin");
    let id = orphan(&journal, &poison, 2, false);
    let mut runners = Runners::new();
    runners.insert(
        JobKind::Checksum,
        Arc::new(atelier::jobs::runners::ChecksumRunner),
    );
    let queue = Queue::open(
        Box::new(SqliteStore::open(&journal).unwrap()),
        runners,
        settings(10, 3),
    )
    .unwrap();
    let rx = queue.subscribe();
    let job = queue.get(id).unwrap().unwrap();
    assert_eq!((job.state, job.crashes), (JobState::Failed, 2));
    assert_eq!(
        job.error.as_deref(),
        Some(
            format!(
                "{}: the process died while running this job (2 times)",
                poison.display()
            )
            .as_str()
        )
    );
    let next = queue
        .enqueue(
            JobKind::Checksum,
            &good,
            JobOptions::default(),
            Priority::BATCH,
        )
        .unwrap();
    collect(&rx, |e| finished(e, 1));
    assert_eq!(queue.get(next).unwrap().unwrap().state, JobState::Done);
    // A retry starts the crash count afresh.
    assert!(queue.retry(id).unwrap());
    collect(&rx, |e| finished(e, 1));
    let job = queue.get(id).unwrap().unwrap();
    assert_eq!((job.state, job.crashes), (JobState::Done, 0));
    queue.shutdown();
}

#[test]
fn max_crashes_is_configurable_and_a_cancelled_orphan_ends_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("q.sqlite");
    let a = orphan(&journal, &touch(dir.path(), "a.bin"), 2, false);
    let mut store = SqliteStore::open(&journal).unwrap();
    // With three crashes allowed, the second is requeued.
    let back = store.requeue_expired(3, &mut |_| {}).unwrap();
    assert_eq!(
        back.iter()
            .map(|j| (j.id, j.state, j.crashes))
            .collect::<Vec<_>>(),
        [(a, JobState::Queued, 2)]
    );
    // A job whose lease runs is not an orphan.
    let held = store
        .claim_next(&dead_worker(), Duration::from_secs(3600))
        .unwrap()
        .unwrap();
    assert!(store.requeue_expired(3, &mut |_| {}).unwrap().is_empty());
    assert_eq!(store.get(a).unwrap().unwrap().state, JobState::Running);
    // Its worker's last renewal runs out now, as when the worker dies.
    let claim = held.claim.unwrap();
    assert!(store.renew(a, &claim, Duration::ZERO).unwrap());
    let back = store.requeue_expired(3, &mut |_| {}).unwrap();
    assert_eq!(back[0].state, JobState::Failed);
    drop(store);

    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("q.sqlite");
    let b = orphan(&journal, &touch(dir.path(), "b.bin"), 1, true);
    let mut store = SqliteStore::open(&journal).unwrap();
    let back = store.requeue_expired(2, &mut |_| {}).unwrap();
    assert_eq!(
        back.iter().map(|j| (j.id, j.state)).collect::<Vec<_>>(),
        [(b, JobState::Cancelled)]
    );
}

#[test]
fn a_clean_shutdown_requeues_a_running_job_without_cost() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("q.sqlite");
    let open = Arc::new(AtomicBool::new(false));
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut runners = Runners::new();
    runners.insert(
        JobKind::Checksum,
        Arc::new(Gate {
            open: open.clone(),
            order: order.clone(),
        }),
    );
    let queue = Queue::open(
        Box::new(SqliteStore::open(&journal).unwrap()),
        runners,
        settings(10, 3),
    )
    .unwrap();
    let rx = queue.subscribe();
    let id = queue
        .enqueue(
            JobKind::Checksum,
            &touch(dir.path(), "a.bin"),
            JobOptions::default(),
            Priority::BATCH,
        )
        .unwrap();
    collect(&rx, |e| {
        e.iter().any(|e| matches!(e, JobEvent::Started { .. }))
    });
    queue.shutdown();
    let job = SqliteStore::open(&journal)
        .unwrap()
        .get(id)
        .unwrap()
        .unwrap();
    assert_eq!(
        (job.state, job.attempts, job.crashes),
        (JobState::Queued, 0, 0)
    );
}

#[test]
fn an_old_journal_gains_the_crash_count_and_a_newer_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("q.sqlite");
    {
        // The schema before crash counts (version 0), with one job running.
        let conn = rusqlite::Connection::open(&journal).unwrap();
        conn.execute_batch(
            "CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, \
             input BLOB NOT NULL, options TEXT NOT NULL, state TEXT NOT NULL, \
             priority INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, \
             max_attempts INTEGER NOT NULL, error TEXT, created_at INTEGER NOT NULL, \
             started_at INTEGER, finished_at INTEGER, not_before INTEGER NOT NULL DEFAULT 0, \
             input_size INTEGER, input_mtime_ns INTEGER, \
             cancel_requested INTEGER NOT NULL DEFAULT 0, owner INTEGER);
             INSERT INTO jobs (kind, input, options, state, priority, attempts, max_attempts, \
             created_at, owner) VALUES ('checksum', X'2F612E62696E', '{}', 'running', 0, 1, 3, 1, 0);",
        )
        .unwrap();
    }
    let mut store = SqliteStore::open(&journal).unwrap();
    let back = store.requeue_expired(2, &mut |_| {}).unwrap();
    assert_eq!(
        back.iter()
            .map(|j| (j.input.clone(), j.state, j.crashes))
            .collect::<Vec<_>>(),
        [(PathBuf::from("/a.bin"), JobState::Queued, 1)]
    );
    drop(store);
    let conn = rusqlite::Connection::open(&journal).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 2);
    conn.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(conn);
    let err = SqliteStore::open(&journal).err().unwrap().to_string();
    assert_eq!(
        err,
        format!(
            "{}: job journal: schema version 99 was written by a newer atelier (this one reads \
             up to 2)",
            journal.display()
        )
    );
}
