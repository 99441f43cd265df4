//! Several `atelier watch` processes draining one queue (a real PostgreSQL server, and the
//! SQLite journal): real Whisper (tiny.en) on the LibriVox clips while workers are killed
//! with SIGKILL and one is stopped (SIGSTOP) past its lease and then continued; and 5,000
//! small files dropped at once on two checksum watchers. Every input ends with exactly one
//! set of outputs, no temp files, and no job done twice.
mod common;
#[path = "common/pgcluster.rs"]
mod pgcluster;
mod watch_util;

use common::write_wav;
use pgcluster::PgCluster;
use serde_json::Value;
use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use watch_util::*;

const FORMATS: [&str; 3] = ["txt", "srt", "json"];
/// Short, so a stopped worker loses its job within seconds.
const LEASE_MS: u64 = 3000;

/// The kill and stop schedule's generator (seeded, printed, `ATELIER_TEST_SEED` reruns it).
struct Lcg(u64);

impl Lcg {
    fn seeded(test: &str) -> Lcg {
        let seed = std::env::var("ATELIER_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        println!("{test}: schedule seed {seed} (rerun with ATELIER_TEST_SEED={seed})");
        Lcg(seed)
    }

    fn next(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + (self.0 >> 33) % (hi - lo)
    }
}

/// The queue every process of a test shares.
enum Shared {
    Sqlite(PathBuf),
    Postgres {
        cluster: PgCluster,
        url: String,
        db: String,
    },
}

impl Shared {
    fn postgres(test: &str) -> Shared {
        let cluster = PgCluster::start();
        let url = cluster.database(test);
        let db = url.rsplit('/').next().unwrap().to_string();
        Shared::Postgres { cluster, url, db }
    }

    /// `--queue`'s value.
    fn arg(&self) -> String {
        match self {
            Shared::Sqlite(p) => p.to_string_lossy().into_owned(),
            Shared::Postgres { url, .. } => url.clone(),
        }
    }

    /// The libpq `key=value` form of a PostgreSQL queue (the other form users write).
    fn key_value(&self) -> Option<String> {
        match self {
            Shared::Sqlite(_) => None,
            Shared::Postgres { cluster, db, .. } => Some(cluster.key_value(db)),
        }
    }

    fn server_log(&self) -> String {
        match self {
            Shared::Sqlite(_) => String::new(),
            Shared::Postgres { cluster, .. } => cluster.log(),
        }
    }
}

/// (pid, event) from every process's stdout.
type Events = Arc<Mutex<Vec<(u32, Value)>>>;

/// One `atelier watch` process, its stdout and stderr drained on threads (a full pipe
/// would block it).
struct Proc {
    child: Child,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid (not yet reaped).
        unsafe {
            libc::kill(self.pid() as i32, sig);
        }
    }

    /// Waits for it to end; its exit status and stderr.
    fn wait(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().unwrap();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let err = self.stderr.lock().unwrap().clone();
        (status, err)
    }
}

/// The watchers of one test.
struct Fleet<'a> {
    home: &'a Home,
    queue: &'a Shared,
    args: Vec<String>,
    procs: Vec<Proc>,
    events: Events,
    spawned: usize,
}

impl<'a> Fleet<'a> {
    fn new(home: &'a Home, queue: &'a Shared, args: Vec<String>) -> Fleet<'a> {
        Fleet {
            home,
            queue,
            args,
            procs: Vec::new(),
            events: Arc::new(Mutex::new(Vec::new())),
            spawned: 0,
        }
    }

    /// Starts one more watcher. Every second one of a PostgreSQL queue is pointed at it
    /// through `ATELIER_QUEUE_URL` in the libpq form instead of `--queue URL`.
    fn spawn(&mut self) -> u32 {
        let mut cmd = self.home.atelier();
        cmd.arg("watch").args(&self.args);
        match self.queue.key_value() {
            Some(kv) if self.spawned % 2 == 1 => {
                cmd.env("ATELIER_QUEUE_URL", kv);
            }
            _ => {
                cmd.arg("--queue").arg(self.queue.arg());
            }
        }
        self.spawned += 1;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let pid = child.id();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let events = Arc::clone(&self.events);
        let out = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    events.lock().unwrap().push((pid, v));
                }
            }
        });
        let text = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&text);
        let err = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        self.procs.push(Proc {
            child,
            stderr: text,
            readers: vec![out, err],
        });
        pid
    }

    /// SIGKILLs process `i`, reaps it and starts a replacement.
    fn kill_and_replace(&mut self, i: usize) -> (u32, u32) {
        let victim = self.procs.remove(i);
        let pid = victim.pid();
        victim.signal(libc::SIGKILL);
        let _ = victim.wait();
        (pid, self.spawn())
    }

    /// Every job of the queue, via `atelier queue list --json`.
    fn jobs(&self) -> Vec<Value> {
        let out = self
            .home
            .atelier()
            .args(["queue", "list", "--json", "--queue"])
            .arg(self.queue.arg())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "queue list: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        parse_events(&String::from_utf8_lossy(&out.stdout))
    }

    fn job(&self, id: i64) -> Value {
        self.jobs()
            .into_iter()
            .find(|j| j["id"] == id)
            .unwrap_or_else(|| panic!("job {id} vanished"))
    }

    /// Live workers, via `atelier queue workers --json`.
    fn workers(&self) -> Vec<Value> {
        let out = self
            .home
            .atelier()
            .args(["queue", "workers", "--json", "--queue"])
            .arg(self.queue.arg())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "queue workers: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        parse_events(&String::from_utf8_lossy(&out.stdout))
    }

    /// What went on, for a failure message.
    fn report(&self) -> String {
        let mut s = String::new();
        for p in &self.procs {
            s += &format!(
                "--- pid {} stderr:\n{}\n",
                p.pid(),
                p.stderr.lock().unwrap()
            );
        }
        s += &format!("--- log:\n{}\n", self.home.log());
        s += &format!("--- server log:\n{}", self.queue.server_log());
        s
    }

    /// Waits until the queue holds `n` jobs, all done.
    fn until_all_done(&self, n: usize, limit: Duration) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let jobs = self.jobs();
            if jobs.len() >= n && jobs.iter().all(|j| j["state"] == "done") {
                return jobs;
            }
            if start.elapsed() > limit {
                panic!(
                    "not all {n} jobs done after {limit:?}: {jobs:#?}\n{}",
                    self.report()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// SIGTERMs every process; each must exit 0.
    fn stop_all(&mut self) {
        for p in &self.procs {
            p.signal(libc::SIGTERM);
        }
        for p in self.procs.drain(..) {
            let pid = p.pid();
            let (status, err) = p.wait();
            assert!(status.success(), "pid {pid} after SIGTERM: {status}\n{err}");
        }
    }

    fn events(&self) -> Vec<(u32, Value)> {
        self.events.lock().unwrap().clone()
    }
}

impl Drop for Fleet<'_> {
    fn drop(&mut self) {
        for p in self.procs.drain(..) {
            p.signal(libc::SIGKILL);
            let _ = p.wait();
        }
    }
}

/// The prefix of the worker ids of process `pid` on this machine (`HOST:PID:…`).
fn worker_prefix(pid: u32) -> String {
    format!("{}:{pid}:", atelier::jobs::host_name())
}

fn held_by(job: &Value, pid: u32) -> bool {
    job["state"] == "running"
        && job["worker"]
            .as_str()
            .is_some_and(|w| w.starts_with(&worker_prefix(pid)))
}

/// Speech inputs: the LibriVox clips (3 to 7 s) in turn, each under its own name.
struct Speech {
    clips: Vec<Vec<f32>>,
    staging: PathBuf,
    inbox: PathBuf,
    inputs: Vec<PathBuf>,
}

impl Speech {
    fn new(home: &Home) -> Speech {
        let (staging, inbox) = (home.path().join("staging"), home.path().join("inbox"));
        std::fs::create_dir(&staging).unwrap();
        std::fs::create_dir(&inbox).unwrap();
        Speech {
            clips: decode_all(&librivox_wavs()),
            staging,
            inbox,
            inputs: Vec::new(),
        }
    }

    /// Drops `n` more inputs into the inbox, each written aside and renamed in whole.
    fn drop_files(&mut self, n: usize) {
        for _ in 0..n {
            let i = self.inputs.len();
            let samples = &self.clips[i % 5];
            let name = format!("speech_{i:02}.wav");
            let aside = self.staging.join(&name);
            write_wav(&aside, samples);
            let input = self.inbox.join(&name);
            std::fs::rename(&aside, &input).unwrap();
            self.inputs.push(input);
        }
    }
}

/// Stops (SIGSTOP) a watcher that is running a job until its lease ran out and the job is
/// taken back, then continues it (SIGCONT). The job's id, the stopped pid and worker, and
/// whether another worker had claimed the job by then.
fn stop_past_the_lease(fleet: &Fleet, rng: &mut Lcg) -> (i64, u32, String, bool) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        assert!(
            Instant::now() < deadline,
            "no watcher was caught running a job\n{}",
            fleet.report()
        );
        let jobs = fleet.jobs();
        let busy: Vec<(i64, u32)> = fleet
            .procs
            .iter()
            .filter_map(|p| {
                jobs.iter()
                    .find(|j| held_by(j, p.pid()))
                    .map(|j| (j["id"].as_i64().unwrap(), p.pid()))
            })
            .collect();
        if busy.is_empty() {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let (id, pid) = busy[rng.next(0, busy.len() as u64) as usize];
        let proc = fleet.procs.iter().find(|p| p.pid() == pid).unwrap();
        proc.signal(libc::SIGSTOP);
        let job = fleet.job(id);
        if !held_by(&job, pid) {
            // It finished that job just now.
            proc.signal(libc::SIGCONT);
            continue;
        }
        let worker = job["worker"].as_str().unwrap().to_string();
        let crashes = job["crashes"].as_u64().unwrap();
        let stopped = Instant::now();
        let mut requeued_at = None;
        let taken = loop {
            std::thread::sleep(Duration::from_millis(200));
            let j = fleet.job(id);
            if j["worker"].as_str() != Some(worker.as_str()) {
                break Some(true);
            }
            // Requeued (the lease is gone); give another worker a moment to take it.
            if j["crashes"].as_u64().unwrap() > crashes {
                let at = *requeued_at.get_or_insert_with(Instant::now);
                if at.elapsed() > Duration::from_secs(2) {
                    break Some(false);
                }
            }
            // Stopped inside a transaction, its locks keep the job: try another moment.
            if stopped.elapsed() > Duration::from_millis(LEASE_MS * 6) {
                break None;
            }
        };
        proc.signal(libc::SIGCONT);
        if let Some(by_other) = taken {
            println!(
                "stopped pid {pid} running job {id} for {} ms (lease {LEASE_MS} ms): taken \
                 back{}",
                stopped.elapsed().as_millis(),
                if by_other {
                    " and claimed by another worker"
                } else {
                    " (queued)"
                }
            );
            return (id, pid, worker, by_other);
        }
        println!("pid {pid} kept job {id} while stopped (inside a transaction?): again");
    }
}

/// `watchers` watchers transcribe on one queue and one is stopped past its lease; then
/// they are `grow_to`, and are killed at random and replaced. Afterwards every input has
/// exactly one complete set of outputs and nothing else is left.
fn kills_and_a_lost_lease(
    test: &str,
    home: &Home,
    queue: &Shared,
    watchers: usize,
    grow_to: usize,
) {
    home.config(&format!(
        "[whisper]\nbeam-size = 1\n[queue]\nlease-ms = {LEASE_MS}\nmax-crashes = 100\n"
    ));
    let began = Instant::now();
    let mut rng = Lcg::seeded(test);
    let mut speech = Speech::new(home);
    let inbox = speech.inbox.clone();
    let args: Vec<String> = [
        inbox.to_string_lossy().as_ref(),
        "--kind",
        "transcribe",
        "--model",
        "whisper-tiny.en",
        "--stable-ms",
        "200",
        "-f",
        &FORMATS.join(","),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut fleet = Fleet::new(home, queue, args);
    for _ in 0..watchers {
        fleet.spawn();
    }
    // A worker loses its job by stalling past the lease.
    speech.drop_files(watchers + 1);
    let (lost_job, stopped_pid, stopped_worker, taken_by_other) =
        stop_past_the_lease(&fleet, &mut rng);
    let noticed = Instant::now();
    let lost_line = format!("job {lost_job}: its lease was lost");
    while !fleet.home.log().contains(&lost_line) {
        assert!(
            noticed.elapsed() < Duration::from_secs(60),
            "the continued pid {stopped_pid} never noticed it lost job {lost_job}\n{}",
            fleet.report()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // More watchers join; workers die at random points and are replaced.
    while fleet.procs.len() < grow_to {
        fleet.spawn();
    }
    speech.drop_files(grow_to + 1);
    let mut kills = 0;
    for round in 0..3 {
        std::thread::sleep(Duration::from_millis(rng.next(300, 2500)));
        let active = fleet
            .jobs()
            .iter()
            .filter(|j| j["state"] == "queued" || j["state"] == "running")
            .count();
        if active == 0 && fleet.jobs().len() == speech.inputs.len() {
            println!("kill {round}: nothing left to interrupt");
            break;
        }
        let i = rng.next(0, fleet.procs.len() as u64) as usize;
        let (killed, new) = fleet.kill_and_replace(i);
        kills += 1;
        println!("kill {round}: SIGKILL pid {killed} ({active} jobs active); started pid {new}");
    }
    let jobs = fleet.until_all_done(speech.inputs.len(), Duration::from_secs(300));
    fleet.stop_all();
    let events = fleet.events();
    println!(
        "{test}: {} inputs, {} processes in all, {kills} killed, {:.0} s",
        speech.inputs.len(),
        fleet.spawned,
        began.elapsed().as_secs_f64()
    );

    // One job per input, done, recorded outputs exactly the files on disk.
    assert_eq!(jobs.len(), speech.inputs.len(), "{jobs:#?}");
    let mut expected: Vec<PathBuf> = speech.inputs.clone();
    for input in &speech.inputs {
        the_done_job(&jobs, input, &FORMATS);
        // Complete: the JSON parses with segments, and the text is theirs.
        let json: Value =
            serde_json::from_slice(&std::fs::read(input.with_extension("json")).unwrap()).unwrap();
        let segments = json["segments"].as_array().unwrap();
        assert!(!segments.is_empty(), "{}", input.display());
        let txt = std::fs::read_to_string(input.with_extension("txt")).unwrap();
        let joined: Vec<String> = segments
            .iter()
            .map(|s| s["text"].as_str().unwrap().trim().to_string())
            .collect();
        assert_eq!(
            txt.lines().collect::<Vec<_>>(),
            joined,
            "{}",
            input.display()
        );
        let srt = std::fs::read_to_string(input.with_extension("srt")).unwrap();
        assert_eq!(srt.matches(" --> ").count(), segments.len());
        expected.extend(FORMATS.iter().map(|f| input.with_extension(f)));
    }
    expected.sort();
    assert!(temp_files(&inbox).is_empty(), "{:?}", temp_files(&inbox));
    assert_eq!(
        files(&inbox),
        expected,
        "exactly one set of outputs, nothing else"
    );

    // No job was done twice: at most one `done` event per job in all processes' output (a
    // process killed between its commit and its print shows none).
    let mut done: HashMap<i64, Vec<u32>> = HashMap::new();
    for (pid, e) in &events {
        if e["event"] == "done" {
            done.entry(e["id"].as_i64().unwrap())
                .or_default()
                .push(*pid);
        }
    }
    for (id, pids) in &done {
        assert_eq!(pids.len(), 1, "job {id} done by {pids:?}");
    }
    // The stalled worker's job was taken back (a crash). Whoever ran it last, the stalled
    // run committed nothing: it may have claimed the job again afresh once continued, but
    // it noticed the lost lease first (the log line above) and the job is done once.
    let job = jobs.iter().find(|j| j["id"] == lost_job).unwrap();
    if taken_by_other {
        assert_ne!(
            job["worker"].as_str(),
            Some(stopped_worker.as_str()),
            "{job:#}"
        );
    }
    assert!(job["crashes"].as_u64().unwrap() >= 1, "{job:#}");
    assert!(
        fleet.workers().is_empty(),
        "every watcher left: {:#?}",
        fleet.workers()
    );
}

#[test]
fn two_then_three_watchers_on_postgres_survive_kills_and_a_lost_lease() {
    let home = Home::new();
    let queue = Shared::postgres("two_then_three");
    kills_and_a_lost_lease("postgres, 2 then 3 watchers", &home, &queue, 2, 3);
}

#[test]
fn two_watchers_on_sqlite_survive_kills_and_a_lost_lease() {
    let home = Home::new();
    let queue = Shared::Sqlite(home.journal());
    kills_and_a_lost_lease("sqlite, 2 watchers", &home, &queue, 2, 2);
}

/// Peak resident memory (VmHWM) of a live process, in MiB.
fn peak_mib(p: &Proc) -> f64 {
    vm_hwm_kb(p.pid()) as f64 / 1024.0
}

fn five_thousand_files(test: &str, home: &Home, queue: &Shared) {
    const N: usize = 5000;
    let (staging, inbox) = (home.path().join("staging"), home.path().join("inbox"));
    std::fs::create_dir(&staging).unwrap();
    std::fs::create_dir(&inbox).unwrap();
    let args: Vec<String> = [
        inbox.to_string_lossy().as_ref(),
        "--kind",
        "checksum",
        "--stable-ms",
        "200",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut fleet = Fleet::new(home, queue, args);
    fleet.spawn();
    fleet.spawn();
    let start = Instant::now();
    while fleet.workers().len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the watchers never registered\n{}",
            fleet.report()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let idle: Vec<f64> = fleet.procs.iter().map(peak_mib).collect();
    let mut inputs = Vec::with_capacity(N);
    for i in 0..N {
        let name = format!("f{i:04}.bin");
        std::fs::write(
            staging.join(&name),
            format!("small file {i}\n").repeat(1 + i % 13),
        )
        .unwrap();
        inputs.push(inbox.join(&name));
    }
    let dropped = Instant::now();
    for input in &inputs {
        std::fs::rename(staging.join(input.file_name().unwrap()), input).unwrap();
    }
    let outputs = |dir: &Path| {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "sha256"))
            .count()
    };
    while outputs(&inbox) < N {
        assert!(
            dropped.elapsed() < Duration::from_secs(240),
            "{} of {N} outputs after 240 s\n{}",
            outputs(&inbox),
            fleet.report()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let jobs = fleet.until_all_done(N, Duration::from_secs(60));
    let took = dropped.elapsed();
    let peak: Vec<f64> = fleet.procs.iter().map(peak_mib).collect();
    println!(
        "{test}: {N} files done in {:.1} s on 2 watchers; peak RSS (VmHWM) {:.0} and {:.0} MiB \
         (idle before the drop: {:.0} and {:.0} MiB)",
        took.as_secs_f64(),
        peak[0],
        peak[1],
        idle[0],
        idle[1]
    );
    fleet.stop_all();
    // Memory stays bounded: what 5,000 queued files add to a watcher is small beside the
    // process itself (generous: a leak of 100 kB per file would pass 500 MiB).
    for (p, i) in peak.iter().zip(&idle) {
        assert!(p - i < 256.0, "peak {p:.0} MiB after {i:.0} MiB idle");
    }

    // Each file one job, run once, and its recorded hash is coreutils'.
    assert_eq!(jobs.len(), N);
    let mut by_input: HashMap<&str, &Value> = HashMap::new();
    for j in &jobs {
        let input = j["input"].as_str().unwrap();
        assert!(by_input.insert(input, j).is_none(), "{input} queued twice");
        assert_eq!(
            (
                j["state"].as_str(),
                j["attempts"].as_u64(),
                j["crashes"].as_u64()
            ),
            (Some("done"), Some(1), Some(0)),
            "{j:#}"
        );
    }
    let mut done: HashMap<i64, usize> = HashMap::new();
    let mut per_pid: HashMap<u32, usize> = HashMap::new();
    for (pid, e) in fleet.events() {
        if e["event"] == "done" {
            *done.entry(e["id"].as_i64().unwrap()).or_default() += 1;
            *per_pid.entry(pid).or_default() += 1;
        }
    }
    assert_eq!(done.len(), N, "every job reported done");
    assert!(done.values().all(|&n| n == 1), "a job was done twice");
    assert_eq!(per_pid.len(), 2, "both watchers took work: {per_pid:?}");
    println!("{test}: jobs per watcher {per_pid:?}");
    for chunk in inputs.chunks(500) {
        let out = std::process::Command::new("sha256sum")
            .args(chunk)
            .output()
            .unwrap();
        assert!(out.status.success());
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let (hash, path) = line.split_once("  ").unwrap();
            let sidecar = Path::new(path).with_extension("sha256");
            assert_eq!(recorded_hash(&sidecar), hash, "{path}");
            let job = by_input[path];
            assert_eq!(job["outputs"][0].as_str(), sidecar.to_str(), "{job:#}");
        }
    }
    assert!(temp_files(&inbox).is_empty());
    assert_eq!(files(&inbox).len(), 2 * N);
}

#[test]
fn five_thousand_files_at_once_on_two_postgres_watchers_run_once_in_bounded_memory() {
    let home = Home::new();
    let queue = Shared::postgres("five_thousand");
    five_thousand_files("postgres", &home, &queue);
}

#[test]
fn five_thousand_files_at_once_on_two_sqlite_watchers_run_once_in_bounded_memory() {
    let home = Home::new();
    let queue = Shared::Sqlite(home.journal());
    five_thousand_files("sqlite", &home, &queue);
}
