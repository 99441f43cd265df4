//! The running queue: worker threads take jobs from the journal in priority order, run them
//! through their kind's [`Runner`], and broadcast [`JobEvent`]s.
use super::runner::{remove_temp_files, OutputLedger, RunContext, RunError, Runners};
use super::store::{CancelOutcome, JobStore, NewJob, WorkerInfo};
use super::QueueError;
use super::{
    now_ms, Job, JobEvent, JobFilter, JobId, JobKind, JobOptions, JobState, OnDone, Priority,
};
use crate::engine::CancelToken;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How the queue runs.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSettings {
    /// Jobs run at once (per device: the model thread serialises model calls).
    pub workers: usize,
    /// Runs before a job that keeps failing lands in `failed`.
    pub max_attempts: u32,
    /// The first retry waits this long; each further one twice as long (at most an hour).
    pub retry_backoff: Duration,
    /// How often workers look for jobs added by other processes and for cancel requests.
    pub poll: Duration,
    /// Times the process may die while running a job before the job is failed (at least 1).
    pub max_crashes: u32,
    /// A claimed job's lease; renewed every third of it. A job whose lease ran out (its
    /// worker died or stalled) is taken back by any worker of the queue.
    pub lease: Duration,
    /// The device this process runs jobs on, as `atelier queue workers` shows it.
    pub device: String,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            workers: 1,
            max_attempts: 3,
            retry_backoff: Duration::from_secs(5),
            poll: Duration::from_millis(500),
            max_crashes: 2,
            lease: Duration::from_secs(30),
            device: "cpu".to_string(),
        }
    }
}

impl QueueSettings {
    /// `[queue]` in config.toml: workers per device kind, attempts, backoff.
    pub fn from_config(config: &crate::config::QueueConfig, cuda: bool) -> Self {
        QueueSettings {
            workers: if cuda {
                config.workers_cuda
            } else {
                config.workers_cpu
            } as usize,
            max_attempts: config.max_attempts.max(1),
            retry_backoff: Duration::from_millis(config.retry_backoff_ms),
            max_crashes: config.max_crashes.max(1),
            lease: Duration::from_millis(config.lease_ms.max(300)),
            ..QueueSettings::default()
        }
    }
}

/// A handle to the running queue; clones share it.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    store: Mutex<Box<dyn JobStore>>,
    runners: Runners,
    settings: QueueSettings,
    subscribers: Mutex<Vec<mpsc::Sender<JobEvent>>>,
    /// Bumped whenever there may be new work; workers wait on it.
    work: Mutex<u64>,
    work_cv: Condvar,
    running: Mutex<HashMap<JobId, Running>>,
    stopping: AtomicBool,
    worker: WorkerInfo,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// A job this process runs: its cancel token, its claim, and whether its lease was lost.
#[derive(Clone)]
struct Running {
    token: CancelToken,
    claim: String,
    lost: Arc<AtomicBool>,
}

impl Running {
    fn lose(&self, id: JobId) {
        if !self.lost.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                "job {id}: its lease was lost (this process stalled past it, and another \
                 worker took the job over): stopping it; its output is discarded"
            );
        }
        self.token.cancel();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A worker that panicked mid-update leaves plain data behind; keep going with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The input's size and mtime (ns), as the journal records them.
pub fn fingerprint(path: &Path) -> Option<(u64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.size(), m.mtime() * 1_000_000_000 + m.mtime_nsec()))
}

impl Queue {
    /// Requeues the jobs a crashed process left `running` (removing their temp files), then
    /// starts `settings.workers` workers.
    pub fn open(
        mut store: Box<dyn JobStore>,
        runners: Runners,
        settings: QueueSettings,
    ) -> Result<Queue, QueueError> {
        let me = WorkerInfo::this_process(&settings.device);
        log_orphans(store.as_mut(), &me.host, settings.max_crashes)?;
        store.heartbeat(&me, 0)?;
        let queue = Queue {
            inner: Arc::new(Inner {
                store: Mutex::new(store),
                runners,
                settings,
                subscribers: Mutex::new(Vec::new()),
                work: Mutex::new(0),
                work_cv: Condvar::new(),
                running: Mutex::new(HashMap::new()),
                stopping: AtomicBool::new(false),
                threads: Mutex::new(Vec::new()),
                worker: me,
            }),
        };
        queue.finish_moves();
        let mut threads = Vec::new();
        for n in 0..queue.inner.settings.workers.max(1) {
            let inner = Arc::clone(&queue.inner);
            let t = std::thread::Builder::new()
                .name(format!("atelier-job-{n}"))
                .spawn(move || worker(&inner))
                .map_err(QueueError::Spawn)?;
            threads.push(t);
        }
        let inner = Arc::clone(&queue.inner);
        let t = std::thread::Builder::new()
            .name("atelier-job-monitor".into())
            .spawn(move || monitor(&inner))
            .map_err(QueueError::Spawn)?;
        threads.push(t);
        *lock(&queue.inner.threads) = threads;
        Ok(queue)
    }

    /// Adds a job; it runs when a worker is free and no higher priority waits.
    pub fn enqueue(
        &self,
        kind: JobKind,
        path: &Path,
        options: JobOptions,
        priority: Priority,
    ) -> Result<JobId, QueueError> {
        let fp = fingerprint(path);
        let job = lock(&self.inner.store).insert(&NewJob {
            kind,
            input: path.to_path_buf(),
            options,
            priority,
            max_attempts: self.inner.settings.max_attempts.max(1),
            input_size: fp.map(|f| f.0),
            input_mtime_ns: fp.map(|f| f.1),
        })?;
        self.inner.emit(JobEvent::Queued {
            id: job.id,
            kind,
            input: job.input.clone(),
            priority,
        });
        self.inner.wake();
        Ok(job.id)
    }

    /// [`Queue::enqueue`] unless the journal holds a job of this kind for this file with
    /// the same size and mtime already (queued by this or another process, in any state):
    /// then `None`. Two watchers of one folder thus queue each file once.
    pub fn enqueue_unique(
        &self,
        kind: JobKind,
        path: &Path,
        options: JobOptions,
        priority: Priority,
    ) -> Result<Option<JobId>, QueueError> {
        let fp = fingerprint(path);
        let job = lock(&self.inner.store).insert_unique(&NewJob {
            kind,
            input: path.to_path_buf(),
            options,
            priority,
            max_attempts: self.inner.settings.max_attempts.max(1),
            input_size: fp.map(|f| f.0),
            input_mtime_ns: fp.map(|f| f.1),
        })?;
        let Some(job) = job else {
            return Ok(None);
        };
        self.inner.emit(JobEvent::Queued {
            id: job.id,
            kind,
            input: job.input.clone(),
            priority,
        });
        self.inner.wake();
        Ok(Some(job.id))
    }

    /// This process as the journal's workers list shows it.
    pub fn worker(&self) -> &WorkerInfo {
        &self.inner.worker
    }

    /// A failed or cancelled job goes back to the queue with its attempts reset.
    pub fn retry(&self, id: JobId) -> Result<bool, QueueError> {
        let mut store = lock(&self.inner.store);
        if !store.retry(id, now_ms())? {
            return Ok(false);
        }
        let priority = store.get(id)?.map_or(Priority::BATCH, |j| j.priority);
        drop(store);
        self.inner.emit(JobEvent::Requeued { id, priority });
        self.inner.wake();
        Ok(true)
    }

    /// Cancels a queued job at once, or asks a running one to stop (it stops at its next
    /// check: between Whisper windows, between images, between chunks).
    pub fn cancel(&self, id: JobId) -> Result<bool, QueueError> {
        let outcome = lock(&self.inner.store).cancel(id, now_ms())?;
        match outcome {
            CancelOutcome::Cancelled => {
                self.inner.emit(JobEvent::Cancelled { id });
                Ok(true)
            }
            CancelOutcome::Requested => {
                if let Some(r) = lock(&self.inner.running).get(&id) {
                    r.token.cancel();
                }
                Ok(true)
            }
            CancelOutcome::Nothing => Ok(false),
        }
    }

    /// Changes the priority of a queued or running job.
    pub fn reprioritize(&self, id: JobId, priority: Priority) -> Result<bool, QueueError> {
        let changed = lock(&self.inner.store).reprioritize(id, priority)?;
        if changed {
            self.inner.emit(JobEvent::Requeued { id, priority });
            self.inner.wake();
        }
        Ok(changed)
    }

    /// Every event from now on. Dropping the receiver unsubscribes.
    pub fn subscribe(&self) -> mpsc::Receiver<JobEvent> {
        let (tx, rx) = mpsc::channel();
        lock(&self.inner.subscribers).push(tx);
        rx
    }

    /// Jobs matching `filter`, oldest first.
    pub fn list(&self, filter: &JobFilter) -> Result<Vec<Job>, QueueError> {
        Ok(lock(&self.inner.store).list(filter)?)
    }

    pub fn get(&self, id: JobId) -> Result<Option<Job>, QueueError> {
        Ok(lock(&self.inner.store).get(id)?)
    }

    /// The newest job of `kind` for `input` (the watcher's de-duplication).
    pub fn latest_for(&self, input: &Path, kind: JobKind) -> Result<Option<Job>, QueueError> {
        Ok(lock(&self.inner.store).latest_for(input, kind)?)
    }

    /// Whether `path` is a recorded output of a done job.
    pub fn is_output(&self, path: &Path) -> Result<bool, QueueError> {
        Ok(lock(&self.inner.store).is_output(path)?)
    }

    /// Jobs neither finished nor failed for good (queued or running), in this journal.
    pub fn pending(&self) -> Result<usize, QueueError> {
        Ok(lock(&self.inner.store).count_active()?)
    }

    /// Stops the workers. A running job is cancelled and queued again (no attempt used),
    /// so the next start runs it from the beginning. Waits for the workers to stop.
    pub fn shutdown(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        for r in lock(&self.inner.running).values() {
            r.token.cancel();
        }
        self.inner.wake();
        let threads = std::mem::take(&mut *lock(&self.inner.threads));
        let joined = !threads.is_empty();
        for t in threads {
            let _ = t.join();
        }
        if joined {
            if let Err(e) = lock(&self.inner.store).leave(&self.inner.worker) {
                tracing::warn!("{e}");
            }
        }
    }

    /// Moves the inputs of done `on-done = move` jobs a crash left in place.
    fn finish_moves(&self) {
        let jobs = match lock(&self.inner.store).done_with_move() {
            Ok(j) => j,
            Err(e) => return tracing::warn!("{e}"),
        };
        for job in jobs {
            let same = fingerprint(&job.input)
                .is_some_and(|(s, m)| Some(s) == job.input_size && Some(m) == job.input_mtime_ns);
            if same {
                move_input(&job);
            }
        }
    }
}

impl Inner {
    fn emit(&self, event: JobEvent) {
        lock(&self.subscribers).retain(|tx| tx.send(event.clone()).is_ok());
    }

    fn wake(&self) {
        *lock(&self.work) += 1;
        self.work_cv.notify_all();
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Sleeps until woken, the next retry is due, or the poll interval passed.
    fn wait_for_work(&self, seen: u64) {
        let mut wait = self.settings.poll;
        if let Ok(Some(due)) = lock(&self.store).next_due() {
            let ms = (due - now_ms()).max(0) as u64;
            wait = wait.min(Duration::from_millis(ms.max(1)));
        }
        let guard = lock(&self.work);
        let _ = self
            .work_cv
            .wait_timeout_while(guard, wait, |g| *g == seen && !self.stopping());
    }
}

fn worker(inner: &Arc<Inner>) {
    let kinds = inner.runners.claimed_kinds();
    while !inner.stopping() {
        let seen = *lock(&inner.work);
        let claimed =
            lock(&inner.store).claim_next_of(&inner.worker, inner.settings.lease, kinds.as_deref());
        match claimed {
            Ok(Some(job)) => run_one(inner, job),
            Ok(None) => inner.wait_for_work(seen),
            Err(e) => {
                tracing::error!("{e}");
                inner.wait_for_work(seen);
            }
        }
    }
}

/// Whether process `pid` on this machine is still an atelier (a pid the kernel reused for
/// another program is not: `/proc/PID/comm` names it).
fn atelier_alive(pid: u32) -> bool {
    let comm = |p: &str| std::fs::read_to_string(format!("/proc/{p}/comm")).ok();
    match (comm(&pid.to_string()), comm("self")) {
        (Some(theirs), Some(ours)) => theirs == ours,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Takes back the jobs that crashed or vanished processes left `running` (what
/// [`Queue::open`] does first), for a caller that must do it before it can open the queue:
/// `watch` runs it before loading its models, so a stop during loading leaves no orphan.
pub fn take_back_orphans(store: &mut dyn JobStore, max_crashes: u32) -> Result<(), QueueError> {
    log_orphans(store, &super::store::host_name(), max_crashes)
}

/// Requeues the jobs whose lease expired (removing their temp files while no worker can
/// claim them), logging each; first ends the leases of dead processes on `host`.
fn log_orphans(store: &mut dyn JobStore, host: &str, max_crashes: u32) -> Result<(), QueueError> {
    // A process that died on this machine: its jobs are orphans now, not after the lease.
    store.expire_dead_on_host(host, &atelier_alive)?;
    let mut removed: HashMap<JobId, usize> = HashMap::new();
    let mut clean = |job: &Job| {
        removed.insert(job.id, remove_temp_files(job.id, &job.output_dir()));
    };
    for job in store.requeue_expired(max_crashes, &mut clean)? {
        let removed = match removed.get(&job.id) {
            Some(&n) if n > 0 => format!(" ({n} temp file(s) removed)"),
            _ => String::new(),
        };
        let on = job.host.as_deref().unwrap_or("?");
        match job.state {
            JobState::Failed => tracing::error!(
                "job {} failed: {}{removed}",
                job.id,
                job.error.as_deref().unwrap_or_default()
            ),
            JobState::Cancelled => tracing::info!(
                "job {} ({}) was running on {on} when its worker died, with a cancel \
                 requested: cancelled{removed}",
                job.id,
                job.input.display()
            ),
            _ => tracing::warn!(
                "job {} ({}) was running on {on} when its worker died or stalled past its \
                 lease ({} of {} crashes): queued again{removed}",
                job.id,
                job.input.display(),
                job.crashes,
                max_crashes.max(1)
            ),
        }
    }
    Ok(())
}

/// Renews the leases of this process's jobs and its heartbeat (every third of the lease),
/// takes back expired jobs of any worker, and passes cancel requests made by other
/// processes (`atelier queue cancel`) to workers.
fn monitor(inner: &Arc<Inner>) {
    let lease = inner.settings.lease;
    let renew_every = lease / 3;
    let sweep_every = (lease / 4).max(inner.settings.poll);
    let tick = inner
        .settings
        .poll
        .min(renew_every)
        .max(Duration::from_millis(10));
    let mut renewed = std::time::Instant::now();
    let mut swept = std::time::Instant::now();
    while !inner.stopping() {
        let jobs: Vec<(JobId, Running)> = lock(&inner.running)
            .iter()
            .map(|(id, r)| (*id, r.clone()))
            .collect();
        if renewed.elapsed() >= renew_every {
            renewed = std::time::Instant::now();
            for (id, r) in &jobs {
                match lock(&inner.store).renew(*id, &r.claim, lease) {
                    Ok(true) => {}
                    Ok(false) => r.lose(*id),
                    Err(e) => tracing::warn!("job {id}: cannot renew its lease: {e}"),
                }
            }
            let n = jobs.len() as u32;
            if let Err(e) = lock(&inner.store).heartbeat(&inner.worker, n) {
                tracing::warn!("heartbeat: {e}");
            }
        }
        for (id, r) in &jobs {
            if matches!(lock(&inner.store).cancel_requested(*id), Ok(true)) {
                r.token.cancel();
            }
        }
        if swept.elapsed() >= sweep_every {
            swept = std::time::Instant::now();
            let mut store = lock(&inner.store);
            match log_orphans(
                store.as_mut(),
                &inner.worker.host,
                inner.settings.max_crashes,
            ) {
                Ok(()) => {}
                Err(e) => tracing::warn!("{e}"),
            }
            drop(store);
            inner.wake();
        }
        let seen = *lock(&inner.work);
        let guard = lock(&inner.work);
        let _ = inner
            .work_cv
            .wait_timeout_while(guard, tick, |g| *g == seen && !inner.stopping());
    }
}

/// `{path}: {message}` unless the message names the file already.
fn name_file(path: &Path, message: &str) -> String {
    let shown = path.display().to_string();
    if message.starts_with(&shown) {
        message.to_string()
    } else {
        format!("{shown}: {message}")
    }
}

/// Checks the input before a runner sees it: gone, a folder, or a symlink loop.
fn check_input(path: &Path) -> Result<(), RunError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(RunError::Permanent("is a folder, not a file".to_string())),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A dangling symlink or a deleted file.
            if std::fs::symlink_metadata(path).is_ok() {
                Err(RunError::Permanent(
                    "a symbolic link to nothing (its target does not exist)".to_string(),
                ))
            } else {
                Err(RunError::Permanent("the file no longer exists".to_string()))
            }
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(RunError::Permanent(
            "a symbolic link loop: the link never reaches a file".to_string(),
        )),
        Err(e) => Err(RunError::Permanent(format!("cannot read the file: {e}"))),
    }
}

/// A job of a watch rule: its input must still resolve inside the rule's folder.
fn check_inside(job: &Job) -> Result<(), RunError> {
    match job.options.roots.first() {
        Some(root) if !crate::media::resolves_inside(&job.input, root) => {
            Err(RunError::Permanent(format!(
                "resolves outside the watched folder {} (a symbolic link?): not read",
                root.display()
            )))
        }
        _ => Ok(()),
    }
}

/// The journal's record of one running job's outputs.
struct Ledger {
    inner: Arc<Inner>,
    job: JobId,
    input: PathBuf,
    kind: JobKind,
    running: Running,
}

impl OutputLedger for Ledger {
    fn may_replace(&self, path: &Path) -> bool {
        lock(&self.inner.store)
            .is_output_of(path, &self.input, self.kind)
            .unwrap_or_else(|e| {
                tracing::warn!("job {}: {e}", self.job);
                false
            })
    }

    fn may_write(&self) -> bool {
        if self.running.lost.load(Ordering::SeqCst) {
            return false;
        }
        // Renewing proves the lease is still ours, and gives the write a whole lease.
        let renewed =
            lock(&self.inner.store).renew(self.job, &self.running.claim, self.inner.settings.lease);
        match renewed {
            Ok(true) => true,
            Ok(false) => {
                self.running.lose(self.job);
                false
            }
            // Unreachable journal: write anyway; the commit decides.
            Err(e) => {
                tracing::warn!("job {}: {e}", self.job);
                true
            }
        }
    }

    fn record(&self, path: &Path) {
        match lock(&self.inner.store).record_output(self.job, &self.running.claim, path) {
            Ok(true) => {}
            Ok(false) => self.running.lose(self.job),
            Err(e) => tracing::warn!("job {}: {e}", self.job),
        }
    }
}

/// For tests of crash recovery only: `ATELIER_TEST_ABORT_ON` names input file names
/// (comma-separated) on which the process aborts as a job starts, like an input that kills
/// a decoder. Unset in normal use, it costs one environment lookup per job.
fn abort_if_poisoned(input: &Path) {
    let Some(names) = std::env::var_os("ATELIER_TEST_ABORT_ON") else {
        return;
    };
    let name = input.file_name().map(|n| n.to_string_lossy().into_owned());
    let names = names.to_string_lossy().into_owned();
    if name.is_some_and(|n| names.split(',').any(|p| p == n)) {
        eprintln!("ATELIER_TEST_ABORT_ON: aborting on {}", input.display());
        std::process::abort();
    }
}

fn backoff(settings: &QueueSettings, attempts: u32) -> Duration {
    let factor = 1u32 << attempts.saturating_sub(1).min(16);
    (settings.retry_backoff * factor).min(Duration::from_secs(3600))
}

fn run_one(inner: &Arc<Inner>, job: Job) {
    let id = job.id;
    let running = Running {
        token: CancelToken::new(),
        claim: job.claim.clone().unwrap_or_default(),
        lost: Arc::new(AtomicBool::new(false)),
    };
    let claim = running.claim.clone();
    if let Some((size, mtime)) = fingerprint(&job.input) {
        match lock(&inner.store).record_input(id, &claim, size, mtime) {
            Ok(true) => {}
            Ok(false) => running.lose(id),
            Err(e) => tracing::warn!("job {id}: {e}"),
        }
    }
    let token = running.token.clone();
    lock(&inner.running).insert(id, running.clone());
    // A shutdown that began before the token was listed did not see it.
    if inner.stopping() {
        token.cancel();
    }
    inner.emit(JobEvent::Started {
        id,
        attempt: job.attempts,
    });
    abort_if_poisoned(&job.input);
    let emitter = Arc::clone(inner);
    let ledger = Arc::new(Ledger {
        inner: Arc::clone(inner),
        job: id,
        input: job.input.clone(),
        kind: job.kind,
        running: running.clone(),
    });
    let ctx = RunContext::new(id, token, Box::new(move |e| emitter.emit(e)))
        .with_ledger(ledger)
        .confined_to(job.options.roots.clone());
    let checked = check_input(&job.input).and_then(|()| check_inside(&job));
    let result = checked.and_then(|()| match inner.runners.get(job.kind) {
        Some(runner) => {
            let run = std::panic::AssertUnwindSafe(|| runner.run(&job, &ctx));
            std::panic::catch_unwind(run).unwrap_or_else(|p| {
                let what = crate::engine::runtime::panic_message(p.as_ref());
                Err(RunError::Transient(format!("the job crashed: {what}")))
            })
        }
        None => Err(RunError::Permanent(Runners::missing(job.kind))),
    });
    lock(&inner.running).remove(&id);
    // A long-lived process (watch, the TUI) hands a large job's freed memory back.
    crate::engine::runtime::release_freed_memory();
    if running.lost.load(Ordering::SeqCst) {
        // Someone else owns the job now: commit nothing, and leave the folder (its temp
        // files may be the new owner's) alone.
        inner.wake();
        return;
    }
    let now = now_ms();
    let mut store = lock(&inner.store);
    let (stored, event) = match result {
        Ok(outputs) => (
            store.complete(id, &claim, &outputs, now),
            JobEvent::Done {
                id,
                outputs: outputs.clone(),
            },
        ),
        Err(RunError::Cancelled) if inner.stopping() => (
            store.requeue(id, &claim),
            JobEvent::Requeued {
                id,
                priority: job.priority,
            },
        ),
        Err(RunError::Cancelled) => (
            store.mark_cancelled(id, &claim, now),
            JobEvent::Cancelled { id },
        ),
        Err(e) => {
            let retry_at = match &e {
                RunError::Transient(_) if job.attempts < job.max_attempts => {
                    Some(now + backoff(&inner.settings, job.attempts).as_millis() as i64)
                }
                _ => None,
            };
            let error = name_file(&job.input, &e.to_string());
            (
                store.fail(id, &claim, &error, retry_at, now),
                JobEvent::Failed {
                    id,
                    error,
                    retry_at,
                },
            )
        }
    };
    drop(store);
    if !matches!(event, JobEvent::Done { .. }) && !matches!(stored, Ok(false)) {
        remove_temp_files(id, &job.output_dir());
    }
    match stored {
        Ok(true) => {
            if matches!(event, JobEvent::Done { .. }) && job.options.on_done == OnDone::Move {
                move_input(&job);
            }
            inner.emit(event);
        }
        Ok(false) => running.lose(id),
        Err(e) => tracing::error!("job {id}: {e}"),
    }
    inner.wake();
}

/// Moves a done job's input into its done folder (keeping its name), never replacing a
/// file there: a clash takes `NAME.1.EXT` (and says so).
fn move_input(job: &Job) {
    let Some(dir) = job.options.done_dir.as_ref() else {
        return;
    };
    let Some(name) = job.input.file_name() else {
        return;
    };
    let target: PathBuf = dir.join(name);
    let inside = || {
        job.options.roots.is_empty()
            || job
                .options
                .roots
                .iter()
                .any(|r| crate::media::resolves_inside(dir, r))
    };
    let moved = std::fs::create_dir_all(dir).and_then(|()| {
        if inside() {
            crate::output::atomic::move_noreplace(&job.input, &target)
        } else {
            Err(std::io::Error::other(
                "the done folder resolves outside the watched folders (a symbolic link?)",
            ))
        }
    });
    match moved {
        Ok(to) if to == target => {
            tracing::info!("moved {} to {}", job.input.display(), to.display())
        }
        Ok(to) => tracing::warn!(
            "moved {} to {}: {} exists",
            job.input.display(),
            to.display(),
            target.display()
        ),
        Err(e) => tracing::warn!(
            "{}: cannot move it to {}: {e}",
            job.input.display(),
            dir.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let s = QueueSettings {
            retry_backoff: Duration::from_millis(500),
            ..QueueSettings::default()
        };
        let waits: Vec<u128> = (1..=4).map(|n| backoff(&s, n).as_millis()).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000]);
        assert_eq!(backoff(&s, 40), Duration::from_secs(3600));
    }

    #[test]
    fn a_queue_that_runs_its_own_kinds_only_leaves_the_others_queued() {
        use crate::jobs::{runners::ChecksumRunner, JobState, SqliteStore};
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("q.sqlite")).unwrap();
        let mut runners = Runners::new();
        runners.insert(JobKind::Checksum, Arc::new(ChecksumRunner));
        let settings = QueueSettings {
            poll: Duration::from_millis(20),
            ..QueueSettings::default()
        };
        let queue = Queue::open(Box::new(store), runners.own_kinds_only(), settings).unwrap();
        let events = queue.subscribe();
        let (prompt, data) = (dir.path().join("cat.prompt"), dir.path().join("a.bin"));
        std::fs::write(&prompt, "a cat").unwrap();
        std::fs::write(&data, "bytes").unwrap();
        // Older and as urgent: a queue claiming every kind would take (and fail) it first.
        let generate = queue
            .enqueue(
                JobKind::Generate,
                &prompt,
                JobOptions::default(),
                Priority::BATCH,
            )
            .unwrap();
        let checksum = queue
            .enqueue(
                JobKind::Checksum,
                &data,
                JobOptions::default(),
                Priority::BATCH,
            )
            .unwrap();
        loop {
            match events.recv_timeout(Duration::from_secs(120)).unwrap() {
                JobEvent::Done { id, .. } if id == checksum => break,
                JobEvent::Failed { id, error, .. } => panic!("job {id} failed: {error}"),
                _ => {}
            }
        }
        let job = queue.get(generate).unwrap().unwrap();
        assert_eq!((job.state, job.attempts), (JobState::Queued, 0));
        queue.shutdown();
    }
}
