//! Hostile paths and journals against the real `atelier` binary: a symlinked folder or file
//! in a watch folder never makes the daemon read or write outside it; an output never
//! replaces a user's file; `on-done = move` never replaces a file; a corpus of hostile
//! journals, each refused with an error naming the file and the problem; and the poison-file
//! scenario (files that kill the process, with real Whisper tiny.en on the good ones).
mod common;
mod watch_util;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use watch_util::*;

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn checksum_args(inbox: &Path) -> Vec<String> {
    vec![
        inbox.to_string_lossy().into_owned(),
        "--kind".into(),
        "checksum".into(),
        "--stable-ms".into(),
        "200".into(),
    ]
}

#[test]
fn symlinks_out_of_a_watch_folder_are_never_read_or_written_through() {
    let home = Home::new();
    let inbox = home.path().join("inbox");
    let outside = home.path().join("outside");
    write(
        &outside.join("before.bin"),
        b"outside, there before the start",
    );
    write(&inbox.join("ok.bin"), b"a good file");
    std::os::unix::fs::symlink(&outside, inbox.join("linked")).unwrap();
    std::os::unix::fs::symlink(outside.join("before.bin"), inbox.join("leak.bin")).unwrap();
    // A link to a file inside the folder may be processed (it stays inside).
    std::os::unix::fs::symlink(inbox.join("ok.bin"), inbox.join("alias.bin")).unwrap();
    // A loop of folders: the walk must end.
    std::os::unix::fs::symlink(&inbox, inbox.join("loop")).unwrap();
    let args = checksum_args(&inbox);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = home.spawn_watch(&args);
    let rx = event_stream(&mut child);
    let mut events = Vec::new();
    until_finished(&rx, 2, &mut events);
    // Written through the link after the start: inotify must not have followed it.
    write(
        &outside.join("later.bin"),
        b"outside, written after the start",
    );
    std::thread::sleep(Duration::from_millis(1500));
    write(&inbox.join("last.bin"), b"a good file written last");
    until_finished(&rx, 3, &mut events);
    assert!(terminate(&mut child), "watch did not exit cleanly");

    let jobs = home.jobs();
    let done: Vec<String> = jobs
        .iter()
        .filter(|j| j["state"] == "done")
        .map(|j| j["input"].as_str().unwrap().to_string())
        .collect();
    let mut want = [
        inbox.join("alias.bin"),
        inbox.join("last.bin"),
        inbox.join("ok.bin"),
    ];
    want.sort();
    let want: Vec<String> = want
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let mut done_sorted = done.clone();
    done_sorted.sort();
    assert_eq!(done_sorted, want, "{jobs:#?}");
    assert_eq!(
        jobs.len(),
        3,
        "nothing through a link out was queued: {jobs:#?}"
    );
    let out: Vec<PathBuf> = files(&outside);
    assert_eq!(
        out,
        [outside.join("before.bin"), outside.join("later.bin")],
        "nothing written outside the watch folder"
    );
    assert!(!inbox.join("leak.sha256").exists());
    assert_eq!(
        recorded_hash(&inbox.join("alias.sha256")),
        sha256sum(&inbox.join("ok.bin"))
    );
    let log = home.log();
    assert!(
        log.contains("leak.bin: skipped: a symbolic link out of"),
        "the skipped link is named in the log:\n{log}"
    );
}

#[test]
fn outputs_never_replace_a_users_file_and_a_rerun_replaces_only_its_own() {
    let home = Home::new();
    let inbox = home.path().join("inbox");
    let input = inbox.join("talk.bin");
    write(&input, b"version one");
    let users = inbox.join("talk.sha256");
    write(&users, b"the user's own notes, not a checksum\n");
    let args = checksum_args(&inbox);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, events, err) = home.watch_until_idle(&args);
    assert!(ok, "{err}");
    let copy = inbox.join("talk.1.sha256");
    let done: Vec<_> = events.iter().filter(|e| e["event"] == "done").collect();
    assert_eq!(done.len(), 1, "{events:#?}");
    assert_eq!(done[0]["outputs"][0], copy.to_string_lossy().as_ref());
    assert_eq!(
        std::fs::read(&users).unwrap(),
        b"the user's own notes, not a checksum\n"
    );
    assert_eq!(recorded_hash(&copy), sha256sum(&input));
    // Said in the job's progress and in the log.
    let noted = events.iter().any(|e| {
        e["event"] == "progress"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("exists and is not an output of this input"))
    });
    assert!(noted, "{events:#?}");
    assert!(home.log().contains("talk.1.sha256"), "{}", home.log());

    // The input changes: its new job replaces its own earlier output, and only that.
    std::thread::sleep(Duration::from_millis(20));
    write(&input, b"version two, longer");
    let (ok, events, err) = home.watch_until_idle(&args);
    assert!(ok, "{err}");
    assert_eq!(count(&events, "done"), 1, "{events:#?}");
    assert_eq!(recorded_hash(&copy), sha256sum(&input));
    assert!(!inbox.join("talk.2.sha256").exists());
    assert_eq!(
        std::fs::read(&users).unwrap(),
        b"the user's own notes, not a checksum\n"
    );
    assert!(temp_files(&inbox).is_empty());
}

#[test]
fn on_done_move_never_replaces_a_file_in_the_done_folder() {
    let home = Home::new();
    let inbox = home.path().join("inbox");
    let done_dir = home.path().join("done");
    write(&inbox.join("a.bin"), b"the new a");
    write(&done_dir.join("a.bin"), b"an older a, already there");
    let mut args = checksum_args(&inbox);
    args.extend(["--on-done".into(), "move".into(), "--done-dir".into()]);
    args.push(done_dir.to_string_lossy().into_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _events, err) = home.watch_until_idle(&args);
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read(done_dir.join("a.bin")).unwrap(),
        b"an older a, already there"
    );
    assert_eq!(
        std::fs::read(done_dir.join("a.1.bin")).unwrap(),
        b"the new a"
    );
    assert!(!inbox.join("a.bin").exists());
}

/// `atelier queue list --queue JOURNAL`: its exit success and stderr.
fn queue_list(home: &Home, journal: &Path) -> (bool, String) {
    let out = home
        .atelier()
        .args(["queue", "list", "--queue"])
        .arg(journal)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sqlite(path: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(sql).unwrap();
}

#[test]
fn hostile_journals_are_refused_naming_the_file_and_the_problem() {
    let home = Home::new();
    let d = home.path().join("journals");
    std::fs::create_dir_all(&d).unwrap();
    let mut cases: Vec<(PathBuf, &str)> = Vec::new();

    let text = d.join("text.sqlite");
    write(&text, "queue:\n  - a.wav\n".repeat(100).as_bytes());
    cases.push((text, "not an SQLite journal"));

    let random = d.join("random.sqlite");
    let noise: Vec<u8> = (0..16384u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    write(&random, &noise);
    cases.push((random, "not an SQLite journal"));

    // A real SQLite file whose pages were overwritten after the header.
    let corrupt = d.join("corrupt.sqlite");
    sqlite(
        &corrupt,
        "CREATE TABLE jobs (id INTEGER PRIMARY KEY, x TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
         INSERT INTO jobs (x) SELECT printf('%.500c', 'a') FROM n;",
    );
    let mut bytes = std::fs::read(&corrupt).unwrap();
    bytes[100..4000].fill(0xff);
    bytes[5000..9000].fill(0);
    std::fs::write(&corrupt, &bytes).unwrap();
    cases.push((corrupt, "malformed"));

    let newer = d.join("newer.sqlite");
    sqlite(&newer, "CREATE TABLE t (x); PRAGMA user_version = 99;");
    cases.push((newer, "schema version 99 was written by a newer atelier"));

    // Someone else's database with a `jobs` table.
    let foreign = d.join("foreign.sqlite");
    sqlite(
        &foreign,
        "CREATE TABLE jobs (id INTEGER PRIMARY KEY, title TEXT); PRAGMA user_version = 1;",
    );
    cases.push((foreign, "its jobs table lacks the column(s) kind, input"));

    let folder = d.join("folder.sqlite");
    std::fs::create_dir(&folder).unwrap();
    cases.push((folder, "is a folder, not a journal file"));

    // A symlink out of the state folder, to a file elsewhere.
    let elsewhere = home.path().join("elsewhere.sqlite");
    sqlite(&elsewhere, "CREATE TABLE t (x);");
    let link = d.join("link.sqlite");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    cases.push((link, "is a symbolic link (to"));

    let fifo = d.join("fifo.sqlite");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    cases.push((fifo, "is not a regular file"));

    // Its folder is a file.
    let blocker = d.join("blocker");
    write(&blocker, b"x");
    cases.push((
        blocker.join("queue.sqlite"),
        "cannot create the journal's folder",
    ));

    for (journal, problem) in &cases {
        let (ok, err) = queue_list(&home, journal);
        assert!(!ok, "{}: accepted", journal.display());
        let line = err.lines().find(|l| l.starts_with("error:")).unwrap_or("");
        assert!(
            line.contains(&*journal.to_string_lossy())
                || line.contains(&*blocker.to_string_lossy()),
            "{}: the error names the file: {err}",
            journal.display()
        );
        assert!(line.contains(problem), "{}: {err}", journal.display());
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    assert!(cases.len() >= 9);
    // The symlinked journal's target was left alone.
    let conn = rusqlite::Connection::open(&elsewhere).unwrap();
    let tables: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'jobs'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0);

    // A zero-byte journal (a crash right after creating it) is a new, empty journal.
    let zero = d.join("zero.sqlite");
    write(&zero, b"");
    let (ok, err) = queue_list(&home, &zero);
    assert!(ok, "{err}");
}

#[test]
fn a_journal_locked_by_another_process_is_named_as_locked() {
    let home = Home::new();
    let journal = home.path().join("queue.sqlite");
    // Create it, then hold a write lock for longer than atelier waits.
    let (ok, err) = queue_list(&home, &journal);
    assert!(ok, "{err}");
    let conn = rusqlite::Connection::open(&journal).unwrap();
    conn.execute_batch("BEGIN EXCLUSIVE; UPDATE jobs SET priority = 0;")
        .unwrap();
    let (ok, err) = queue_list(&home, &journal);
    assert!(!ok);
    assert!(err.contains(&*journal.to_string_lossy()), "{err}");
    assert!(err.contains("locked by another process"), "{err}");
    conn.execute_batch("ROLLBACK;").unwrap();
}

/// Two LibriVox clips as 16 kHz mono samples (the shortest, to keep the test quick).
fn speech() -> Vec<Vec<f32>> {
    let mut paths = librivox_wavs();
    paths.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    decode_all(&paths[..2])
}

#[test]
fn poison_files_fail_named_after_bounded_restarts_and_every_good_file_is_done_once() {
    use std::os::unix::process::ExitStatusExt;
    const MAX_CRASHES: usize = 2;
    let home = Home::new();
    home.config(&format!(
        "[whisper]\nbeam-size = 1\n[queue]\nmax-crashes = {MAX_CRASHES}\n"
    ));
    let inbox = home.path().join("inbox");
    let clips = speech();
    // Poison files sort first, so each start claims one before any good file.
    let poison = [inbox.join("0_poison_a.wav"), inbox.join("0_poison_b.wav")];
    let good = [inbox.join("good_1.wav"), inbox.join("good_2.wav")];
    for (p, c) in poison.iter().zip(&clips).chain(good.iter().zip(&clips)) {
        std::fs::create_dir_all(&inbox).unwrap();
        common::write_wav(p, c);
    }
    let names: Vec<String> = poison
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let bound = MAX_CRASHES * poison.len() + 1;
    let mut runs = 0;
    let mut all_events = Vec::new();
    loop {
        assert!(runs < bound, "still not idle after {runs} starts");
        runs += 1;
        let out = home
            .watch(&[
                inbox.to_str().unwrap(),
                "--kind",
                "transcribe",
                "--stable-ms",
                "200",
                "-f",
                "txt",
                "--exit-when-idle",
            ])
            .env("ATELIER_TEST_ABORT_ON", names.join(","))
            .output()
            .unwrap();
        all_events.extend(parse_events(&String::from_utf8_lossy(&out.stdout)));
        match out.status.signal() {
            Some(libc::SIGABRT) => continue,
            Some(s) => panic!("killed by signal {s}"),
            // Idle (exit 1 when it saw jobs fail).
            None => {
                let code = out.status.code();
                assert!(
                    matches!(code, Some(0 | 1)),
                    "{code:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                break;
            }
        }
    }
    assert!(runs <= bound, "{runs} starts, at most {bound}");
    let jobs = home.jobs();
    for p in &good {
        let mine = jobs_of(&jobs, p);
        assert_eq!(mine.len(), 1, "{}: {jobs:#?}", p.display());
        assert_eq!(mine[0]["state"], "done", "{:#}", mine[0]);
        let id = &mine[0]["id"];
        let done = all_events
            .iter()
            .filter(|e| e["event"] == "done" && e["id"] == *id)
            .count();
        assert_eq!(done, 1, "{}: done exactly once", p.display());
        let text = std::fs::read_to_string(p.with_extension("txt")).unwrap();
        assert!(
            text.split_whitespace().count() >= 3,
            "{}: {text}",
            p.display()
        );
    }
    for p in &poison {
        let mine = jobs_of(&jobs, p);
        assert_eq!(mine.len(), 1, "{}: {jobs:#?}", p.display());
        assert_eq!(mine[0]["state"], "failed", "{:#}", mine[0]);
        let error = mine[0]["error"].as_str().unwrap();
        assert!(error.contains(&*p.to_string_lossy()), "{error}");
        assert!(
            error.contains(&format!(
                "the process died while running this job ({MAX_CRASHES} times)"
            )),
            "{error}"
        );
        assert!(!p.with_extension("txt").exists());
    }
}
