//! `atelier watch` and `atelier queue` end to end with the cheap `checksum` kind (the queue,
//! journal, watcher and output writes are the same for every kind): partial uploads, restart
//! pickup, de-duplication, both placements, on-done move, marker files, a deleted input,
//! the queue commands, and a load of 5,000 files. Checksums are checked against coreutils'
//! sha256sum.
mod watch_util;

use atelier::jobs::{
    JobEvent, JobKind, JobState, Queue, QueueSettings, RunContext, RunError, Runner, Runners,
    SqliteStore,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use watch_util::*;

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn checksum_output(input: &Path, dir: &Path) -> PathBuf {
    let stem = input.file_stem().unwrap().to_string_lossy();
    dir.join(format!("{stem}.sha256"))
}

#[test]
fn partial_uploads_are_taken_only_when_complete_and_a_renamed_part_once() {
    let home = Home::new();
    let inbox = home.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let mut child = home.spawn_watch(&[
        inbox.to_str().unwrap(),
        "--kind",
        "checksum",
        "--stable-ms",
        "1500",
    ]);
    let rx = event_stream(&mut child);
    // Written in chunks, more slowly than any single write; each pause is well under the
    // stable period, so only the complete file may be taken.
    let slow = inbox.join("slow.bin");
    {
        let mut f = std::fs::File::create(&slow).unwrap();
        for i in 0..8u8 {
            f.write_all(&vec![i; 64 * 1024]).unwrap();
            f.flush().unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // An upload under a `.part` name, renamed when complete.
    let part = inbox.join("upload.bin.part");
    write(&part, &[7u8; 100_000]);
    std::thread::sleep(Duration::from_millis(300));
    let up = inbox.join("upload.bin");
    std::fs::rename(&part, &up).unwrap();
    let mut events = Vec::new();
    until_finished(&rx, 2, &mut events);
    assert!(
        terminate(&mut child),
        "watch did not exit cleanly on SIGTERM"
    );

    let jobs = home.jobs();
    assert_eq!(jobs.len(), 2, "{jobs:#?}");
    for input in [&slow, &up] {
        let mine = jobs_of(&jobs, input);
        assert_eq!(mine.len(), 1, "{}: {jobs:#?}", input.display());
        assert_eq!(mine[0]["state"], "done");
        let out = checksum_output(input, &inbox);
        assert_eq!(recorded_hash(&out), sha256sum(input), "{}", input.display());
        assert_eq!(mine[0]["outputs"][0], out.to_string_lossy().as_ref());
    }
    assert!(jobs_of(&jobs, &part).is_empty());
    assert!(temp_files(&inbox).is_empty());
}

#[test]
fn restart_picks_up_new_files_and_never_repeats_a_job_or_takes_its_outputs() {
    let home = Home::new();
    let inbox = home.path().join("inbox");
    let first = [
        inbox.join("a.bin"),
        inbox.join("b.bin"),
        inbox.join("sub/c.bin"),
    ];
    for (i, p) in first.iter().enumerate() {
        write(p, format!("file {i}").as_bytes());
    }
    let args = [
        inbox.to_str().unwrap(),
        "--kind",
        "checksum",
        "--stable-ms",
        "200",
    ];
    let (ok, events, err) = home.watch_until_idle(&args);
    assert!(ok, "{err}");
    assert_eq!(
        (count(&events, "queued"), count(&events, "done")),
        (3, 3),
        "{events:#?}"
    );

    // Dropped while Atelier was down.
    let later = [inbox.join("d.bin"), inbox.join("sub/deeper/e.bin")];
    for (i, p) in later.iter().enumerate() {
        write(p, format!("later {i}").as_bytes());
    }
    let (ok, events, err) = home.watch_until_idle(&args);
    assert!(ok, "{err}");
    assert_eq!(
        (count(&events, "queued"), count(&events, "done")),
        (2, 2),
        "{events:#?}"
    );
    let queued: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == "queued")
        .map(|e| e["input"].as_str().unwrap().to_string())
        .collect();
    let mut expected: Vec<String> = later
        .iter()
        .map(|p| {
            std::fs::canonicalize(p)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    expected.sort();
    let mut queued_sorted = queued.clone();
    queued_sorted.sort();
    assert_eq!(queued_sorted, expected);

    // Nothing new: nothing queued (outputs beside the inputs do not count as inputs).
    let (ok, events, err) = home.watch_until_idle(&args);
    assert!(ok, "{err}");
    assert_eq!(count(&events, "queued"), 0, "{events:#?}");

    // A changed file is a new job.
    write(&first[0], b"changed");
    let (ok, events, err) = home.watch_until_idle(&args);
    assert!(ok, "{err}");
    assert_eq!(count(&events, "queued"), 1, "{events:#?}");

    let jobs = home.jobs();
    assert_eq!(jobs.len(), 6);
    assert!(jobs.iter().all(|j| j["state"] == "done"));
    for p in first.iter().chain(&later) {
        let canon = std::fs::canonicalize(p).unwrap();
        let out = checksum_output(&canon, canon.parent().unwrap());
        assert_eq!(recorded_hash(&out), sha256sum(p), "{}", p.display());
    }
    // Exactly one output per input, and nothing else.
    let outputs = files(&inbox)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "sha256"))
        .count();
    assert_eq!(outputs, 5);
    assert!(temp_files(&inbox).is_empty());
}

#[test]
fn mirror_placement_and_on_done_move() {
    let home = Home::new();
    let inbox = home.path().join("inbox");
    let out = home.path().join("out");
    let input = inbox.join("x/y/clip.bin");
    write(&input, b"mirror me");
    let hash = sha256sum(&input);
    let (ok, events, err) = home.watch_until_idle(&[
        inbox.to_str().unwrap(),
        "--kind",
        "checksum",
        "--stable-ms",
        "200",
        "--output-dir",
        out.to_str().unwrap(),
        "--on-done",
        "move",
    ]);
    assert!(ok, "{err}");
    assert_eq!(count(&events, "done"), 1, "{events:#?}");
    let mirrored = out.join("x/y/clip.sha256");
    assert_eq!(recorded_hash(&mirrored), hash);
    // Nothing beside the input; the input moved into done/ keeping its place.
    assert!(!inbox.join("x/y/clip.sha256").exists());
    assert!(!input.exists());
    let moved = inbox.join("done/x/y/clip.bin");
    assert_eq!(sha256sum(&moved), hash);
    // Running again takes neither the moved file nor the outputs.
    let (ok, events, _) = home.watch_until_idle(&[
        inbox.to_str().unwrap(),
        "--kind",
        "checksum",
        "--stable-ms",
        "200",
        "--output-dir",
        out.to_str().unwrap(),
        "--on-done",
        "move",
    ]);
    assert!(ok);
    assert_eq!(count(&events, "queued"), 0, "{events:#?}");
}

#[test]
fn marker_mode_waits_for_the_marker() {
    let home = Home::new();
    let inbox = home.path().join("inbox");
    let input = inbox.join("m.bin");
    write(&input, b"marked");
    let args = [
        inbox.to_str().unwrap(),
        "--kind",
        "checksum",
        "--stable-ms",
        "200",
        "--marker",
        ".ready",
    ];
    let (ok, events, _) = home.watch_until_idle(&args);
    assert!(ok);
    assert_eq!(count(&events, "queued"), 0, "{events:#?}");
    write(&inbox.join("m.bin.ready"), b"");
    let (ok, events, _) = home.watch_until_idle(&args);
    assert!(ok);
    assert_eq!(count(&events, "done"), 1, "{events:#?}");
    assert_eq!(recorded_hash(&inbox.join("m.sha256")), sha256sum(&input));
}

#[test]
fn queue_commands_list_retry_cancel_and_clear() {
    let home = Home::new();
    let inbox = home.path().join("inbox");
    write(&inbox.join("good.bin"), b"good");
    // A symlink loop: its job fails with a clear error, the rest completes.
    std::os::unix::fs::symlink(inbox.join("loop2.bin"), inbox.join("loop1.bin")).unwrap();
    std::os::unix::fs::symlink(inbox.join("loop1.bin"), inbox.join("loop2.bin")).unwrap();
    let args = [
        inbox.to_str().unwrap(),
        "--kind",
        "checksum",
        "--stable-ms",
        "200",
    ];
    let (ok, events, _) = home.watch_until_idle(&args);
    assert!(!ok, "failed jobs make the exit status 1");
    assert_eq!(count(&events, "done"), 1, "{events:#?}");
    let jobs = home.jobs();
    let failed: Vec<_> = jobs.iter().filter(|j| j["state"] == "failed").collect();
    assert_eq!(failed.len(), 2, "{jobs:#?}");
    for j in &failed {
        let e = j["error"].as_str().unwrap();
        assert!(
            e.contains("symbolic link loop") && e.contains("loop"),
            "{e}"
        );
        assert_eq!(j["attempts"], 1, "bad input is not retried");
    }
    let queue = home.journal();
    let q = queue.to_str().unwrap();
    let run = |args: &[&str]| {
        let out = home.atelier().args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, text) = run(&["queue", "list", "--state", "failed", "--queue", q]);
    assert!(ok);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains("symbolic link loop"));
    // Retry both, cancel one before it runs: the other fails again, the same way.
    let (ok, text) = run(&["queue", "retry", "--failed", "--queue", q]);
    assert!(ok, "{text}");
    let states: Vec<_> = home.jobs().iter().map(|j| j["state"].clone()).collect();
    assert_eq!(states.iter().filter(|s| *s == "queued").count(), 2);
    let loop1 = failed
        .iter()
        .find(|j| j["input"].as_str().unwrap().ends_with("loop1.bin"))
        .unwrap()["id"]
        .to_string();
    let (ok, text) = run(&["queue", "cancel", &loop1, "--queue", q]);
    assert!(ok && text.contains("cancelled"), "{text}");
    let (ok, _) = run(&["queue", "cancel", "999", "--queue", q]);
    assert!(!ok, "cancelling no job is an error");
    let (_, events, _) = home.watch_until_idle(&args);
    assert_eq!(
        count(&events, "queued"),
        0,
        "no new jobs for known files: {events:#?}"
    );
    assert_eq!(count(&events, "failed"), 1, "{events:#?}");
    let jobs = home.jobs();
    let by_state = |s: &str| jobs.iter().filter(|j| j["state"] == s).count();
    assert_eq!(
        (by_state("done"), by_state("cancelled"), by_state("failed")),
        (1, 1, 1),
        "{jobs:#?}"
    );
    let (ok, text) = run(&["queue", "clear-done", "--queue", q]);
    assert!(ok && text.starts_with("1 job"), "{text}");
    assert_eq!(home.jobs().len(), 2);
    let (ok, _) = run(&["queue", "clear-done", "--all", "--queue", q]);
    assert!(ok);
    assert!(home.jobs().is_empty());
}

/// Holds every job until released.
struct Hold(Arc<AtomicBool>);

impl Runner for Hold {
    fn run(&self, _job: &atelier::jobs::Job, ctx: &RunContext) -> Result<Vec<PathBuf>, RunError> {
        while !self.0.load(Ordering::SeqCst) {
            ctx.check_cancel()?;
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Vec::new())
    }
}

#[test]
fn a_deleted_input_cancels_its_queued_job() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = std::fs::canonicalize(dir.path()).unwrap().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let release = Arc::new(AtomicBool::new(false));
    let mut runners = Runners::new();
    runners.insert(JobKind::Checksum, Arc::new(Hold(release.clone())));
    let store = SqliteStore::open(&dir.path().join("q.sqlite")).unwrap();
    let queue = Queue::open(Box::new(store), runners, QueueSettings::default()).unwrap();
    let rx = queue.subscribe();
    let rule = atelier::watch::Rule::new(atelier::watch::RuleSpec {
        name: "t".into(),
        root: inbox.clone(),
        kind: Some(JobKind::Checksum),
        ..Default::default()
    })
    .unwrap();
    let settings = atelier::watch::WatchSettings {
        stable: Duration::from_millis(100),
        ..Default::default()
    };
    let mut handle = atelier::watch::start(vec![rule], queue.clone(), settings).unwrap();
    let next = |pred: &dyn Fn(&JobEvent) -> bool| loop {
        let e = rx.recv_timeout(Duration::from_secs(60)).expect("an event");
        if pred(&e) {
            return e;
        }
    };
    write(&inbox.join("first.bin"), b"1");
    next(&|e| matches!(e, JobEvent::Started { .. }));
    write(&inbox.join("second.bin"), b"2");
    let JobEvent::Queued { id, .. } = next(&|e| matches!(e, JobEvent::Queued { .. })) else {
        unreachable!()
    };
    std::fs::remove_file(inbox.join("second.bin")).unwrap();
    next(&|e| *e == JobEvent::Cancelled { id });
    release.store(true, Ordering::SeqCst);
    next(&|e| matches!(e, JobEvent::Done { .. }));
    handle.stop();
    queue.shutdown();
    assert_eq!(queue.get(id).unwrap().unwrap().state, JobState::Cancelled);
}

#[test]
fn an_input_that_vanishes_and_reappears_unchanged_is_queued_again() {
    // A network mount that drops a file for a moment: its queued job is cancelled on the
    // confirmed deletion (ENOENT), and when the same file (same size and mtime) is back,
    // its job is queued again rather than taken as already handled.
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(dir.path()).unwrap();
    let inbox = base.join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let release = Arc::new(AtomicBool::new(false));
    let mut runners = Runners::new();
    runners.insert(JobKind::Checksum, Arc::new(Hold(release.clone())));
    let store = SqliteStore::open(&base.join("q.sqlite")).unwrap();
    let queue = Queue::open(Box::new(store), runners, QueueSettings::default()).unwrap();
    let rx = queue.subscribe();
    let rule = atelier::watch::Rule::new(atelier::watch::RuleSpec {
        name: "t".into(),
        root: inbox.clone(),
        kind: Some(JobKind::Checksum),
        ..Default::default()
    })
    .unwrap();
    let settings = atelier::watch::WatchSettings {
        stable: Duration::from_millis(100),
        ..Default::default()
    };
    let mut handle = atelier::watch::start(vec![rule], queue.clone(), settings).unwrap();
    let next = |pred: &dyn Fn(&JobEvent) -> bool| loop {
        let e = rx.recv_timeout(Duration::from_secs(60)).expect("an event");
        if pred(&e) {
            return e;
        }
    };
    write(&inbox.join("first.bin"), b"1");
    next(&|e| matches!(e, JobEvent::Started { .. }));
    let second = inbox.join("second.bin");
    write(&second, b"2");
    let JobEvent::Queued { id, .. } = next(&|e| matches!(e, JobEvent::Queued { .. })) else {
        unreachable!()
    };
    let away = base.join("second.bin");
    std::fs::rename(&second, &away).unwrap();
    next(&|e| *e == JobEvent::Cancelled { id });
    std::fs::rename(&away, &second).unwrap();
    // The journal holds one job per kind, file, size and mtime: the cancelled job itself is
    // queued again (not a second job for the same file).
    next(&|e| matches!(e, JobEvent::Requeued { id: r, .. } if *r == id));
    release.store(true, Ordering::SeqCst);
    next(&|e| {
        *e == JobEvent::Done {
            id,
            outputs: Vec::new(),
        }
    });
    handle.stop();
    queue.shutdown();
    assert_eq!(queue.get(id).unwrap().unwrap().state, JobState::Done);
}

#[test]
fn five_thousand_files_dropped_at_once_are_all_processed_in_bounded_memory() {
    const N: usize = 5000;
    let home = Home::new();
    let inbox = home.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let mut child = home.spawn_watch(&[
        inbox.to_str().unwrap(),
        "--kind",
        "checksum",
        "--stable-ms",
        "300",
        "--workers",
        "2",
    ]);
    let pid = child.id();
    let rx = event_stream(&mut child);
    // Idle means started: models (none for this kind) and libtorch loaded, folders watched.
    for _ in 0..600 {
        if home.log().contains("watching") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let idle_kb = vm_hwm_kb(pid);
    let mut inputs = Vec::with_capacity(N);
    for i in 0..N {
        let p = inbox.join(format!("d{:02}/f{i:05}.bin", i % 50));
        write(&p, format!("small file {i}\n").as_bytes());
        inputs.push(p);
    }
    let mut events = Vec::new();
    until_finished(&rx, N, &mut events);
    let hwm_kb = vm_hwm_kb(pid);
    assert!(terminate(&mut child));
    let queued = count(&events, "queued");
    let started = count(&events, "started");
    let done = count(&events, "done");
    let failed = count(&events, "failed");
    println!(
        "{N} files: {queued} queued, {started} started, {done} done, {failed} failed events; \
         VmHWM {} MiB idle, {} MiB after",
        idle_kb / 1024,
        hwm_kb / 1024
    );
    assert_eq!((queued, started, done, failed), (N, N, N, 0));
    let mut ids: Vec<i64> = events
        .iter()
        .filter(|e| e["event"] == "done")
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), N, "every job done exactly once");
    let jobs = home.jobs();
    assert_eq!(jobs.len(), N);
    assert!(jobs.iter().all(|j| j["state"] == "done"));
    // Every output is there and right (spot-check the hash of every 250th against sha256sum).
    for (i, p) in inputs.iter().enumerate() {
        let out = checksum_output(p, p.parent().unwrap());
        assert!(out.is_file(), "{}", out.display());
        if i % 250 == 0 {
            assert_eq!(recorded_hash(&out), sha256sum(p));
        }
    }
    assert!(temp_files(&inbox).is_empty());
    // Bounded: the started process is large (libtorch's libraries); 5,000 jobs must add
    // little to it: no per-job data is kept once a job is journalled (25 KiB a job would
    // already exceed this bound).
    assert!(
        hwm_kb < idle_kb + 128 * 1024,
        "VmHWM {hwm_kb} kB after, {idle_kb} kB idle"
    );
}

#[test]
fn the_polling_watcher_sees_files_dropped_after_start() {
    let home = Home::new();
    home.config("[queue]\npoll-interval-ms = 200\n");
    let inbox = home.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let mut child = home.spawn_watch(&[
        inbox.to_str().unwrap(),
        "--kind",
        "checksum",
        "--stable-ms",
        "300",
        "--poll",
        "always",
    ]);
    let rx = event_stream(&mut child);
    std::thread::sleep(Duration::from_millis(500));
    let input = inbox.join("sub/late.bin");
    write(&input, b"seen by polling");
    let mut events = Vec::new();
    until_finished(&rx, 1, &mut events);
    assert!(terminate(&mut child));
    assert!(home.log().contains("polling"), "{}", home.log());
    assert_eq!(
        recorded_hash(&checksum_output(&input, &inbox.join("sub"))),
        sha256sum(&input)
    );
}
