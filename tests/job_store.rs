//! The `JobStore` contract, run on both journals: the SQLite file and a real PostgreSQL
//! server (a throwaway cluster on a Unix socket, tests/common/pgcluster.rs). Each contract
//! is one function; `contract!` makes a `sqlite::NAME` and a `postgres::NAME` test of it.
//! Leases are ended by renewing them for zero time, never by sleeping past them.
#[path = "common/pgcluster.rs"]
mod pgcluster;

use atelier::jobs::{
    now_ms, CancelOutcome, JobFilter, JobId, JobKind, JobOptions, JobState, JobStore, NewJob,
    PgStore, Priority, QueueLocation, SqliteStore, WorkerInfo,
};
use pgcluster::PgCluster;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::Duration;

/// A journal a contract runs on; `open` gives another connection to the same one.
trait Backend: Sync {
    fn open(&self) -> Box<dyn JobStore>;
    /// Rows of the schema-version record (one after any number of migrations).
    fn schema_rows(&self) -> i64;
}

struct Sqlite {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Sqlite {
    fn new() -> Sqlite {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.sqlite");
        Sqlite { _dir: dir, path }
    }
}

impl Backend for Sqlite {
    fn open(&self) -> Box<dyn JobStore> {
        Box::new(SqliteStore::open(&self.path).unwrap())
    }

    fn schema_rows(&self) -> i64 {
        // PRAGMA user_version is the record: one value, set once.
        let conn = rusqlite::Connection::open(&self.path).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert!(version > 0, "the journal was never migrated");
        let tables: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'jobs'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        tables
    }
}

struct Pg {
    cluster: Arc<PgCluster>,
    url: String,
}

impl Pg {
    fn new(test: &str) -> Pg {
        let cluster = PgCluster::shared();
        let url = cluster.database(test);
        Pg { cluster, url }
    }
}

impl Backend for Pg {
    fn open(&self) -> Box<dyn JobStore> {
        match PgStore::open(&self.url) {
            Ok(s) => Box::new(s),
            Err(e) => panic!("{e}\nserver log:\n{}", self.cluster.log()),
        }
    }

    fn schema_rows(&self) -> i64 {
        let mut c = ::postgres::Client::connect(&self.url, ::postgres::NoTls).unwrap();
        c.query_one("SELECT COUNT(*) FROM atelier_schema", &[])
            .unwrap()
            .get(0)
    }
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name(&super::Sqlite::new()); } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name(&super::Pg::new(stringify!($name))); } )*
        }
    };
}

contract!(
    claims_take_the_highest_priority_then_the_oldest_due_job,
    concurrent_claims_take_each_job_once,
    a_stale_claim_changes_nothing,
    an_expired_lease_is_requeued_as_a_crash_until_max_crashes_fails_it,
    cancel_ends_queued_jobs_and_a_cancelled_orphan_ends_cancelled,
    insert_unique_holds_each_fingerprint_once_even_under_concurrent_inserts,
    concurrent_first_opens_migrate_once,
    outputs_are_recorded_by_the_owner_and_committed_with_completion,
    workers_list_heartbeats_and_dead_local_processes_lose_their_leases,
    changed_since_returns_only_changed_jobs,
);

const LONG: Duration = Duration::from_secs(600);

fn job(input: &str, priority: i32) -> NewJob {
    job_of(JobKind::Checksum, input, priority)
}

fn job_of(kind: JobKind, input: &str, priority: i32) -> NewJob {
    NewJob {
        kind,
        input: PathBuf::from(input),
        options: JobOptions::default(),
        priority: Priority(priority),
        max_attempts: 3,
        input_size: Some(input.len() as u64),
        input_mtime_ns: Some(1_700_000_000_000_000_000),
    }
}

fn worker(id: &str, host: &str, pid: u32) -> WorkerInfo {
    WorkerInfo {
        id: id.to_string(),
        host: host.to_string(),
        pid,
        device: "cpu".to_string(),
    }
}

fn me() -> WorkerInfo {
    worker("test-worker", "test-host", 4242)
}

fn claim(store: &mut dyn JobStore, lease: Duration) -> Option<atelier::jobs::Job> {
    store.claim_next(&me(), lease).unwrap()
}

fn state(store: &dyn JobStore, id: JobId) -> JobState {
    store.get(id).unwrap().unwrap().state
}

fn claims_take_the_highest_priority_then_the_oldest_due_job(b: &dyn Backend) {
    let mut s = b.open();
    let ids: Vec<JobId> = [("/a", 0), ("/b", 10), ("/c", 0), ("/d", 5), ("/e", 10)]
        .iter()
        .map(|(p, prio)| s.insert(&job(p, *prio)).unwrap().id)
        .collect();
    let mut order = Vec::new();
    let mut tokens = Vec::new();
    while let Some(j) = claim(s.as_mut(), LONG) {
        assert_eq!(j.state, JobState::Running);
        assert_eq!(j.attempts, 1);
        assert_eq!(
            (j.host.as_deref(), j.device.as_deref(), j.worker.as_deref()),
            (Some("test-host"), Some("cpu"), Some("test-worker"))
        );
        assert!(j.lease_until.is_some_and(|l| l > now_ms()));
        tokens.push(j.claim.clone().expect("a claim token"));
        order.push(j.id);
    }
    assert_eq!(order, [ids[1], ids[4], ids[3], ids[0], ids[2]]);
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), 5, "every claim has its own token");

    // A job waiting out a retry is not due; the other kinds are left to their runners.
    let later = s.insert(&job("/later", 99)).unwrap().id;
    let j = claim(s.as_mut(), LONG).unwrap();
    assert_eq!(j.id, later);
    let at = now_ms() + 3_600_000;
    assert!(s
        .fail(
            later,
            j.claim.as_deref().unwrap(),
            "transient",
            Some(at),
            now_ms()
        )
        .unwrap());
    assert_eq!(state(s.as_ref(), later), JobState::Queued);
    assert_eq!(s.next_due().unwrap(), Some(at));
    let speech = s
        .insert(&job_of(JobKind::Transcribe, "/talk.wav", 0))
        .unwrap()
        .id;
    let only_checksums = s
        .claim_next_of(&me(), LONG, Some(&[JobKind::Checksum]))
        .unwrap();
    assert_eq!(only_checksums.map(|j| j.id), None);
    let any = claim(s.as_mut(), LONG).map(|j| j.id);
    assert_eq!(any, Some(speech));
    assert_eq!(claim(s.as_mut(), LONG).map(|j| j.id), None);
    assert_eq!(s.count_active().unwrap(), 7);
}

fn concurrent_claims_take_each_job_once(b: &dyn Backend) {
    let mut s = b.open();
    let all: Vec<JobId> = (0..200)
        .map(|n| s.insert(&job(&format!("/in/{n}"), n % 3)).unwrap().id)
        .collect();
    let threads = 4;
    let barrier = Barrier::new(threads);
    let claimed: Vec<Vec<JobId>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let mut store = b.open();
                    let w = worker(&format!("w{t}"), "test-host", 100 + t as u32);
                    barrier.wait();
                    let mut mine = Vec::new();
                    while let Some(j) = store.claim_next(&w, LONG).unwrap() {
                        assert_eq!(j.worker.as_deref(), Some(w.id.as_str()));
                        mine.push(j.id);
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut every: Vec<JobId> = claimed.iter().flatten().copied().collect();
    every.sort();
    assert_eq!(every, all, "each job claimed exactly once");
    let running = s
        .list(&JobFilter {
            states: vec![JobState::Running],
            ..JobFilter::default()
        })
        .unwrap();
    assert_eq!(running.len(), all.len());
    // Each job's recorded worker is the one whose claim returned it.
    for (t, ids) in claimed.iter().enumerate() {
        for id in ids {
            let j = s.get(*id).unwrap().unwrap();
            assert_eq!(j.worker, Some(format!("w{t}")));
        }
    }
}

fn a_stale_claim_changes_nothing(b: &dyn Backend) {
    let mut s = b.open();
    let id = s.insert(&job("/in/a.bin", 0)).unwrap().id;
    let first = claim(s.as_mut(), Duration::ZERO).unwrap();
    let stale = first.claim.clone().unwrap();
    let back = s.requeue_expired(5, &mut |_| {}).unwrap();
    assert_eq!(back.iter().map(|j| j.id).collect::<Vec<_>>(), [id]);
    let second = claim(s.as_mut(), LONG).unwrap();
    let owner = second.claim.clone().unwrap();
    assert_ne!(stale, owner);
    let out = Path::new("/in/a.bin.sha256");
    let now = now_ms();
    assert!(!s.renew(id, &stale, LONG).unwrap());
    assert!(!s.record_input(id, &stale, 1, 1).unwrap());
    assert!(!s.record_output(id, &stale, out).unwrap());
    assert!(!s.complete(id, &stale, &[out.to_path_buf()], now).unwrap());
    assert!(!s.fail(id, &stale, "late", None, now).unwrap());
    assert!(!s.fail(id, &stale, "late", Some(now), now).unwrap());
    assert!(!s.mark_cancelled(id, &stale, now).unwrap());
    assert!(!s.requeue(id, &stale).unwrap());
    assert!(!s.renew(id, "not a token", LONG).unwrap());
    let j = s.get(id).unwrap().unwrap();
    assert_eq!(j.state, JobState::Running);
    assert_eq!(j.claim.as_deref(), Some(owner.as_str()));
    assert_eq!((j.attempts, j.crashes), (1, 1));
    assert_eq!(j.error, None);
    assert!(j.outputs.is_empty(), "{:?}", j.outputs);
    assert_eq!(j.input_size, Some("/in/a.bin".len() as u64));

    // The owner's changes hold, and once done its token is spent too.
    assert!(s.renew(id, &owner, LONG).unwrap());
    assert!(s.record_input(id, &owner, 7, 8).unwrap());
    assert!(s.complete(id, &owner, &[out.to_path_buf()], now).unwrap());
    let j = s.get(id).unwrap().unwrap();
    assert_eq!(j.state, JobState::Done);
    assert_eq!((j.input_size, j.input_mtime_ns), (Some(7), Some(8)));
    assert_eq!(j.outputs, [out]);
    assert_eq!(j.finished_at, Some(now));
    assert!(!s.complete(id, &owner, &[], now).unwrap());
    assert!(!s.fail(id, &owner, "late", None, now).unwrap());
    assert!(!s.requeue(id, &owner).unwrap());
    assert!(!s.renew(id, &owner, LONG).unwrap());
    assert_eq!(s.get(id).unwrap().unwrap().outputs, [out]);
}

fn an_expired_lease_is_requeued_as_a_crash_until_max_crashes_fails_it(b: &dyn Backend) {
    let mut s = b.open();
    let input = "/in/poison.wav";
    let id = s.insert(&job(input, 0)).unwrap().id;
    let held = s.insert(&job("/in/held.wav", -1)).unwrap().id;
    let j = claim(s.as_mut(), LONG).unwrap();
    assert_eq!(j.id, id);
    let token = j.claim.unwrap();
    let other = claim(s.as_mut(), LONG).unwrap();
    assert_eq!(other.id, held);
    let mut seen = Vec::new();
    let mut clean = |j: &atelier::jobs::Job| seen.push((j.id, j.state));
    assert!(s.requeue_expired(2, &mut clean).unwrap().is_empty());
    assert!(seen.is_empty(), "a live lease is left alone");
    // The owner stops renewing: its lease ends.
    assert!(s.renew(id, &token, Duration::ZERO).unwrap());
    let mut clean = |j: &atelier::jobs::Job| seen.push((j.id, j.state));
    let back = s.requeue_expired(2, &mut clean).unwrap();
    assert_eq!(back.len(), 1);
    let j = &back[0];
    assert_eq!((j.id, j.state, j.crashes), (id, JobState::Queued, 1));
    assert_eq!(j.attempts, 0, "a crash uses up a crash, not an attempt");
    assert_eq!(j.lease_until, None);
    assert_eq!(seen, [(id, JobState::Running)], "cleaned while still held");
    // Run again and crash again: at max-crashes it fails, naming the input.
    let j = claim(s.as_mut(), Duration::ZERO).unwrap();
    assert_eq!((j.id, j.attempts), (id, 1));
    let back = s.requeue_expired(2, &mut |_| {}).unwrap();
    assert_eq!(back.len(), 1);
    let j = &back[0];
    assert_eq!((j.id, j.state, j.crashes), (id, JobState::Failed, 2));
    assert_eq!(
        j.error.as_deref(),
        Some(format!("{input}: the process died while running this job (2 times)").as_str())
    );
    assert!(j.finished_at.is_some());
    assert_eq!(state(s.as_ref(), held), JobState::Running);
    // A retry starts afresh.
    assert!(s.retry(id, now_ms()).unwrap());
    let j = s.get(id).unwrap().unwrap();
    assert_eq!(
        (j.state, j.attempts, j.crashes, j.error),
        (JobState::Queued, 0, 0, None)
    );
}

fn cancel_ends_queued_jobs_and_a_cancelled_orphan_ends_cancelled(b: &dyn Backend) {
    let mut s = b.open();
    let queued = s.insert(&job("/in/q", 0)).unwrap().id;
    assert_eq!(
        s.cancel(queued, now_ms()).unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(state(s.as_ref(), queued), JobState::Cancelled);
    assert_eq!(s.cancel(queued, now_ms()).unwrap(), CancelOutcome::Nothing);
    assert_eq!(
        s.cancel(JobId(987_654), now_ms()).unwrap(),
        CancelOutcome::Nothing
    );

    // Running: the worker is asked; it stops and marks it.
    let asked = s.insert(&job("/in/asked", 0)).unwrap().id;
    let token = claim(s.as_mut(), LONG).unwrap().claim.unwrap();
    assert!(!s.cancel_requested(asked).unwrap());
    assert_eq!(s.cancel(asked, now_ms()).unwrap(), CancelOutcome::Requested);
    assert!(s.cancel_requested(asked).unwrap());
    assert_eq!(state(s.as_ref(), asked), JobState::Running);
    assert!(s.mark_cancelled(asked, &token, now_ms()).unwrap());
    assert_eq!(state(s.as_ref(), asked), JobState::Cancelled);
    assert!(!s.cancel_requested(asked).unwrap());

    // Running, asked, and then its worker died: the wish stands.
    let orphan = s.insert(&job("/in/orphan", 0)).unwrap().id;
    let token = claim(s.as_mut(), LONG).unwrap().claim.unwrap();
    assert_eq!(
        s.cancel(orphan, now_ms()).unwrap(),
        CancelOutcome::Requested
    );
    assert!(s.renew(orphan, &token, Duration::ZERO).unwrap());
    let back = s.requeue_expired(5, &mut |_| {}).unwrap();
    assert_eq!(
        back.iter().map(|j| (j.id, j.state)).collect::<Vec<_>>(),
        [(orphan, JobState::Cancelled)]
    );
    assert_eq!(back[0].crashes, 1);
    assert!(!s.cancel_requested(orphan).unwrap());
    assert!(!s.mark_cancelled(orphan, &token, now_ms()).unwrap());

    // Done: nothing to cancel. Cancelled: retry queues it again.
    let done = s.insert(&job("/in/done", 0)).unwrap().id;
    let token = claim(s.as_mut(), LONG).unwrap().claim.unwrap();
    assert!(s.complete(done, &token, &[], now_ms()).unwrap());
    assert_eq!(s.cancel(done, now_ms()).unwrap(), CancelOutcome::Nothing);
    assert!(!s.retry(done, now_ms()).unwrap());
    assert!(s.retry(orphan, now_ms()).unwrap());
    let j = s.get(orphan).unwrap().unwrap();
    assert_eq!((j.state, j.crashes, j.attempts), (JobState::Queued, 0, 0));
}

fn insert_unique_holds_each_fingerprint_once_even_under_concurrent_inserts(b: &dyn Backend) {
    let mut s = b.open();
    let a = job("/in/a.wav", 0);
    let first = s
        .insert_unique(&a)
        .unwrap()
        .expect("a new fingerprint is queued");
    assert_eq!(s.insert_unique(&a).unwrap(), None);
    // In any state: a finished job still holds its fingerprint.
    let token = claim(s.as_mut(), LONG).unwrap().claim.unwrap();
    assert!(s.complete(first.id, &token, &[], now_ms()).unwrap());
    assert_eq!(s.insert_unique(&a).unwrap(), None);
    // Changed content (mtime), another kind: new fingerprints.
    let touched = NewJob {
        input_mtime_ns: a.input_mtime_ns.map(|m| m + 1),
        ..a.clone()
    };
    assert!(s.insert_unique(&touched).unwrap().is_some());
    assert_eq!(s.insert_unique(&touched).unwrap(), None);
    let other_kind = NewJob {
        kind: JobKind::Transcribe,
        ..a.clone()
    };
    assert!(s.insert_unique(&other_kind).unwrap().is_some());
    // No fingerprint (size and mtime unknown): nothing to compare, always queued; and
    // `insert` never de-duplicates.
    let unknown = NewJob {
        input_size: None,
        ..a.clone()
    };
    assert!(s.insert_unique(&unknown).unwrap().is_some());
    assert!(s.insert_unique(&unknown).unwrap().is_some());
    assert!(s.insert(&a).is_ok());

    // Eight connections insert one new file at the same moment: one job.
    let racy = job("/in/racy.wav", 0);
    let threads = 8;
    let barrier = Barrier::new(threads);
    let won: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (barrier, racy) = (&barrier, &racy);
                scope.spawn(move || {
                    let mut store = b.open();
                    barrier.wait();
                    store.insert_unique(racy).unwrap().is_some() as usize
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(won, 1);
    let racy_jobs = s
        .list(&JobFilter {
            input: Some(PathBuf::from("/in/racy.wav")),
            ..JobFilter::default()
        })
        .unwrap();
    assert_eq!(racy_jobs.len(), 1, "{racy_jobs:#?}");
}

fn concurrent_first_opens_migrate_once(b: &dyn Backend) {
    for round in 0..2 {
        let threads = 8;
        let barrier = Barrier::new(threads);
        std::thread::scope(|scope| {
            for t in 0..threads {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    let mut store = b.open();
                    store.insert(&job(&format!("/in/{round}-{t}"), 0)).unwrap();
                });
            }
        });
        assert_eq!(b.schema_rows(), 1);
    }
    let s = b.open();
    assert_eq!(s.list(&JobFilter::default()).unwrap().len(), 16);
}

fn outputs_are_recorded_by_the_owner_and_committed_with_completion(b: &dyn Backend) {
    let mut s = b.open();
    let input = Path::new("/in/talk.wav");
    let id = s.insert(&job("/in/talk.wav", 0)).unwrap().id;
    let (txt, srt, json) = (
        PathBuf::from("/in/talk.txt"),
        PathBuf::from("/in/talk.srt"),
        PathBuf::from("/in/talk.json"),
    );
    let stale = claim(s.as_mut(), LONG).unwrap().claim.unwrap();
    // Recorded as it is written: a re-run after a crash knows the file as its own.
    assert!(s.record_output(id, &stale, &txt).unwrap());
    assert!(
        s.record_output(id, &stale, &txt).unwrap(),
        "recording twice is fine"
    );
    assert!(s.is_output_of(&txt, input, JobKind::Checksum).unwrap());
    assert!(!s.is_output_of(&txt, input, JobKind::Transcribe).unwrap());
    assert!(!s
        .is_output_of(&txt, Path::new("/in/other.wav"), JobKind::Checksum)
        .unwrap());
    assert_eq!(
        s.get(id).unwrap().unwrap().outputs,
        std::slice::from_ref(&txt)
    );
    // The first run stalls past its lease; a second run takes over.
    assert!(s.renew(id, &stale, Duration::ZERO).unwrap());
    s.requeue_expired(5, &mut |_| {}).unwrap();
    let owner = claim(s.as_mut(), LONG).unwrap().claim.unwrap();
    assert!(s.is_output_of(&txt, input, JobKind::Checksum).unwrap());
    // The new owner writes the same file again: recording it again is no lost lease.
    assert!(s.record_output(id, &owner, &txt).unwrap());
    // The late first run cannot complete, and records nothing of its own.
    let late = [txt.clone(), srt.clone()];
    assert!(!s.complete(id, &stale, &late, now_ms()).unwrap());
    assert!(!s.is_output(&srt).unwrap());
    assert_eq!(s.get(id).unwrap().unwrap().state, JobState::Running);
    // The owner's completion replaces the list with exactly what it wrote, in its order.
    assert!(s.record_output(id, &owner, &json).unwrap());
    let mine = [json.clone(), txt.clone()];
    assert!(s.complete(id, &owner, &mine, now_ms()).unwrap());
    let j = s.get(id).unwrap().unwrap();
    assert_eq!(
        (j.state, j.outputs.clone()),
        (JobState::Done, mine.to_vec())
    );
    assert!(s.is_output(&json).unwrap() && s.is_output(&txt).unwrap());
    assert!(!s.is_output(&srt).unwrap());
    // Done: no more records under its token.
    assert!(!s.record_output(id, &owner, &srt).unwrap());
    assert!(!s.is_output(&srt).unwrap());
    // A cleared job takes its output records with it.
    assert_eq!(s.clear_finished(false).unwrap(), 1);
    assert!(!s.is_output(&json).unwrap());
    assert_eq!(s.get(id).unwrap(), None);
}

fn workers_list_heartbeats_and_dead_local_processes_lose_their_leases(b: &dyn Backend) {
    let mut s = b.open();
    let (w1, w2) = (worker("a-worker", "h1", 11), worker("b-worker", "h2", 22));
    s.heartbeat(&w1, 0).unwrap();
    s.heartbeat(&w2, 3).unwrap();
    let rows = s.workers(LONG).unwrap();
    let seen: Vec<(&str, &str, u32, &str, u32)> = rows
        .iter()
        .map(|r| {
            (
                r.id.as_str(),
                r.host.as_str(),
                r.pid,
                r.device.as_str(),
                r.running,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("a-worker", "h1", 11, "cpu", 0),
            ("b-worker", "h2", 22, "cpu", 3)
        ]
    );
    assert!(rows.iter().all(|r| r.heartbeat_at >= r.started_at));
    let before = rows[0].clone();
    std::thread::sleep(Duration::from_millis(20));
    s.heartbeat(&w1, 2).unwrap();
    let after = s.workers(LONG).unwrap();
    let a = after.iter().find(|r| r.id == "a-worker").unwrap();
    assert_eq!((a.started_at, a.running), (before.started_at, 2));
    assert!(a.heartbeat_at > before.heartbeat_at, "{a:?} {before:?}");
    s.leave(&w1).unwrap();
    let left: Vec<String> = s.workers(LONG).unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(left, ["b-worker"]);
    // Only heartbeats within the window count as live.
    std::thread::sleep(Duration::from_millis(20));
    assert!(s.workers(Duration::from_millis(5)).unwrap().is_empty());

    // On host "local": pid 101 died, pid 102 lives, an unregistered worker (it never
    // heartbeated, or it left) holds a job too; another host's job is not ours to judge.
    let (dead, live, ghost) = (
        worker("dead", "local", 101),
        worker("live", "local", 102),
        worker("ghost", "local", 103),
    );
    let far = worker("far", "elsewhere", 101);
    s.heartbeat(&dead, 1).unwrap();
    s.heartbeat(&live, 1).unwrap();
    let mut held = Vec::new();
    for (n, w) in [&dead, &live, &ghost, &far].into_iter().enumerate() {
        let id = s.insert(&job(&format!("/in/{n}"), 0)).unwrap().id;
        let j = s.claim_next(w, LONG).unwrap().unwrap();
        assert_eq!(j.id, id);
        held.push(id);
    }
    let ended = s.expire_dead_on_host("local", &|pid| pid == 102).unwrap();
    assert_eq!(ended, 2);
    let ids: Vec<String> = s.workers(LONG).unwrap().into_iter().map(|r| r.id).collect();
    assert!(!ids.contains(&"dead".to_string()), "{ids:?}");
    assert!(ids.contains(&"live".to_string()), "{ids:?}");
    let mut back: Vec<JobId> = s
        .requeue_expired(5, &mut |_| {})
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    back.sort();
    assert_eq!(back, [held[0], held[2]]);
    assert_eq!(state(s.as_ref(), held[1]), JobState::Running);
    assert_eq!(state(s.as_ref(), held[3]), JobState::Running);
    // Ended leases are not ended twice.
    assert_eq!(
        s.expire_dead_on_host("local", &|pid| pid == 102).unwrap(),
        0
    );
}

fn changed_since_returns_only_changed_jobs(b: &dyn Backend) {
    let mut s = b.open();
    let ids: Vec<JobId> = (0..3)
        .map(|n| s.insert(&job(&format!("/in/{n}"), 0)).unwrap().id)
        .collect();
    let newest = s
        .list(&JobFilter::default())
        .unwrap()
        .iter()
        .map(|j| j.updated_at)
        .max()
        .unwrap();
    std::thread::sleep(Duration::from_millis(10));
    let claimed = claim(s.as_mut(), LONG).unwrap();
    assert_eq!(claimed.id, ids[0]);
    assert!(claimed.updated_at > newest, "a change moves updated_at");
    let changed = s
        .list(&JobFilter {
            changed_since: Some(newest + 1),
            ..JobFilter::default()
        })
        .unwrap();
    assert_eq!(changed.iter().map(|j| j.id).collect::<Vec<_>>(), [ids[0]]);
    let limited = s
        .list(&JobFilter {
            limit: Some(2),
            ..JobFilter::default()
        })
        .unwrap();
    assert_eq!(
        limited.iter().map(|j| j.id).collect::<Vec<_>>(),
        [ids[1], ids[2]],
        "the newest, oldest first"
    );
}

// ---------------------------------------------------------------- PostgreSQL only

#[test]
fn postgres_accepts_the_url_and_the_libpq_key_value_forms() {
    let cluster = PgCluster::shared();
    let url = cluster.database("forms");
    let db = url.rsplit('/').next().unwrap().to_string();
    let mut by_url = PgStore::open(&url).unwrap();
    let id = by_url.insert(&job("/in/a", 0)).unwrap().id;
    let kv = cluster.key_value(&db);
    assert!(kv.starts_with("host=/"), "{kv}");
    let by_kv = PgStore::open(&kv).unwrap();
    assert_eq!(
        by_kv.get(id).unwrap().map(|j| j.input),
        Some("/in/a".into())
    );
    let query_form = format!(
        "postgresql://postgres@/{db}?host={}&port={}",
        pgcluster::percent_encode(&cluster.socket_dir().to_string_lossy()),
        cluster.port()
    );
    let by_query = PgStore::open(&query_form).unwrap();
    assert_eq!(by_query.get(id).unwrap().map(|j| j.id), Some(id));
    // Messages name the queue without a password; every form reads the same.
    let shown = format!(
        "postgres://postgres@{}:{}/{db}",
        cluster.socket_dir().display(),
        cluster.port()
    );
    assert_eq!(by_url.describe(), shown);
    assert_eq!(by_kv.describe(), shown);
    // `--queue` takes both forms for PostgreSQL; anything else is a journal file.
    for text in [url.as_str(), kv.as_str(), query_form.as_str()] {
        assert_eq!(
            QueueLocation::from_text(text),
            Some(QueueLocation::Postgres(text.to_string())),
            "{text}"
        );
    }
    assert_eq!(QueueLocation::from_text("/srv/queue.sqlite"), None);
}

#[test]
fn postgres_errors_name_the_queue_and_hide_the_password() {
    let cluster = PgCluster::shared();
    // No server on this port in the cluster's socket folder.
    let url = format!(
        "postgres://atelier:s3cret@{}:1/q",
        pgcluster::percent_encode(&cluster.socket_dir().to_string_lossy())
    );
    let err = PgStore::open(&url)
        .err()
        .expect("no server there")
        .to_string();
    assert!(
        err.starts_with(&format!(
            "postgres://atelier@{}:1/q: job queue: cannot connect",
            cluster.socket_dir().display()
        )),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
    // A schema from a newer atelier is refused, not misread.
    let url = cluster.database("newer");
    drop(PgStore::open(&url).unwrap());
    let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    c.batch_execute("UPDATE atelier_schema SET version = 99")
        .unwrap();
    let err = PgStore::open(&url).err().expect("refused").to_string();
    assert!(
        err.contains("schema version 99 was written by a newer atelier"),
        "{err}"
    );
}

#[test]
fn postgres_reconnects_after_the_server_drops_the_connection() {
    let cluster = PgCluster::shared();
    let url = cluster.database("reconnect");
    let mut s = PgStore::open(&url).unwrap();
    let id = s.insert(&job("/in/a", 0)).unwrap().id;
    let mut admin = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    let db = url.rsplit('/').next().unwrap();
    // What a server restart or a failover does to every client.
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&db],
        )
        .unwrap();
    // The call that finds the connection dead fails, naming the queue; the next reconnects.
    let mut answered = None;
    for _ in 0..3 {
        match s.get(id) {
            Ok(j) => {
                answered = j;
                break;
            }
            Err(e) => assert!(e.to_string().contains("job queue"), "{e}"),
        }
    }
    assert_eq!(answered.map(|j| j.id), Some(id));
}
