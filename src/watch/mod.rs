//! Watch folders: notify (inotify, or polling on network mounts), de-duplicated events,
//! a stable size+mtime check, routing rules, and jobs into the [`Queue`].
//!
//! Events are only hints: every path they name goes into a pending set, and a file is taken
//! once its size and mtime stayed the same for the stable period. A start-up scan and any
//! overflow of the kernel's event queue (`need_rescan`) walk the folders again, so nothing
//! dropped while Atelier was down or during a burst is missed. A file already journalled with
//! the same size and mtime is never queued twice, also not by two watchers of one folder (the
//! journal's unique key, [`crate::jobs::dedup_key`]); a deleted input cancels its queued job.
pub mod fstype;
pub mod rules;

pub use rules::{is_partial_name, PollMode, Rule, RuleError, RuleSpec};

use crate::jobs::{fingerprint, JobState, Queue};
use notify::{EventKind, RecursiveMode, Watcher};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// How the watcher decides a file is complete.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchSettings {
    /// Size and mtime must stay the same this long.
    pub stable: Duration,
    /// The polling watcher's interval.
    pub poll_interval: Duration,
}

impl Default for WatchSettings {
    fn default() -> Self {
        WatchSettings {
            stable: rules::default_stable(),
            poll_interval: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("{}: cannot watch: {source}", path.display())]
    Notify {
        path: PathBuf,
        source: notify::Error,
    },
    #[error("cannot start the watcher thread: {0}")]
    Spawn(std::io::Error),
}

/// The running watcher; dropping it (or [`WatchHandle::stop`]) stops it.
pub struct WatchHandle {
    stop: Arc<AtomicBool>,
    pending: Arc<AtomicUsize>,
    scanned: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WatchHandle {
    /// Whether the start-up scan is over and no file waits for its stable period.
    pub fn is_idle(&self) -> bool {
        self.scanned.load(Ordering::SeqCst) && self.pending.load(Ordering::SeqCst) == 0
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A file seen but not yet taken.
struct Pending {
    rule: usize,
    seen: Option<(u64, i64)>,
    since: Instant,
}

enum Watchers {
    Native(notify::RecommendedWatcher),
    Poll(notify::PollWatcher),
}

/// Starts watching every rule's folder; files become jobs in `queue`.
pub fn start(
    rules: Vec<Rule>,
    queue: Queue,
    settings: WatchSettings,
) -> Result<WatchHandle, WatchError> {
    let (tx, rx) = mpsc::channel::<(usize, notify::Result<notify::Event>)>();
    let mut watchers = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let tx = tx.clone();
        let handler = move |e: notify::Result<notify::Event>| {
            let _ = tx.send((i, e));
        };
        let fs = fstype::fs_type(&rule.root);
        let poll = match rule.poll {
            PollMode::Always => true,
            PollMode::Never => false,
            PollMode::Auto => fs.as_deref().is_some_and(fstype::is_network),
        };
        let err = |source| WatchError::Notify {
            path: rule.root.clone(),
            source,
        };
        let mut w = if poll {
            let config = notify::Config::default()
                .with_poll_interval(settings.poll_interval)
                .with_follow_symlinks(false);
            Watchers::Poll(notify::PollWatcher::new(handler, config).map_err(err)?)
        } else {
            // Never follow a symlinked folder out of the root (or round a loop).
            let config = notify::Config::default().with_follow_symlinks(false);
            Watchers::Native(notify::RecommendedWatcher::new(handler, config).map_err(err)?)
        };
        match &mut w {
            Watchers::Native(n) => n.watch(&rule.root, RecursiveMode::Recursive),
            Watchers::Poll(p) => p.watch(&rule.root, RecursiveMode::Recursive),
        }
        .map_err(err)?;
        tracing::info!(
            "watching {} ({}, {}, filesystem {})",
            rule.root.display(),
            rule.name,
            if poll { "polling" } else { "inotify" },
            fs.as_deref().unwrap_or("unknown")
        );
        watchers.push(w);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let pending = Arc::new(AtomicUsize::new(0));
    let scanned = Arc::new(AtomicBool::new(false));
    let mut state = State {
        rules,
        queue,
        settings,
        pending: HashMap::new(),
        new_dirs: Vec::new(),
        vanished: HashSet::new(),
    };
    let (stop2, pending2, scanned2) = (stop.clone(), pending.clone(), scanned.clone());
    let thread = std::thread::Builder::new()
        .name("atelier-watch".into())
        .spawn(move || {
            let _watchers = watchers;
            for i in 0..state.rules.len() {
                let root = state.rules[i].root.clone();
                state.scan(i, &root);
            }
            scanned2.store(true, Ordering::SeqCst);
            state.take_stable();
            pending2.store(state.pending.len(), Ordering::SeqCst);
            while !stop2.load(Ordering::SeqCst) {
                match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(first) => {
                        state.on_event(first);
                        while let Ok(more) = rx.try_recv() {
                            state.on_event(more);
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
                state.rescan_new_dirs();
                state.take_stable();
                pending2.store(state.pending.len(), Ordering::SeqCst);
            }
        })
        .map_err(WatchError::Spawn)?;
    Ok(WatchHandle {
        stop,
        pending,
        scanned,
        thread: Some(thread),
    })
}

/// Whether `path` is confirmed gone (ENOENT). Other errors (EIO, ESTALE, EACCES on a
/// network mount that hiccuped) are not a deletion.
fn gone(path: &Path) -> bool {
    matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
}

struct State {
    rules: Vec<Rule>,
    queue: Queue,
    settings: WatchSettings,
    pending: HashMap<PathBuf, Pending>,
    /// Folders that appeared, with when: notify watches a new folder only after it has
    /// reported it, so files written into it in between are found by a second scan.
    new_dirs: Vec<(usize, PathBuf, Instant)>,
    /// Inputs whose queued job was cancelled because they were deleted: queued again if
    /// they reappear (a network mount that came back), even unchanged.
    vanished: HashSet<PathBuf>,
}

/// How long after a folder appears it is scanned again (notify has added its watch by then).
const NEW_DIR_RESCAN: Duration = Duration::from_millis(500);

impl State {
    fn rescan_new_dirs(&mut self) {
        let now = Instant::now();
        let (due, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.new_dirs)
            .into_iter()
            .partition(|(_, _, at)| now.duration_since(*at) >= NEW_DIR_RESCAN);
        self.new_dirs = wait;
        for (rule, dir, _) in due {
            self.scan(rule, &dir);
        }
    }

    fn on_event(&mut self, (rule, event): (usize, notify::Result<notify::Event>)) {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                // An error (e.g. the event queue overflowed): look at everything again.
                tracing::warn!("watcher: {e}; rescanning");
                let root = self.rules[rule].root.clone();
                return self.scan(rule, &root);
            }
        };
        if event.need_rescan() {
            tracing::warn!("watcher: events were dropped; rescanning");
            let root = self.rules[rule].root.clone();
            return self.scan(rule, &root);
        }
        match event.kind {
            EventKind::Remove(_) => {
                for p in &event.paths {
                    if gone(p) {
                        self.removed(rule, p);
                    }
                }
            }
            EventKind::Access(_) => {}
            _ => {
                for p in &event.paths {
                    // A rename reports the old name too: it is gone now. Any other error
                    // (EIO, ESTALE on a network mount) is not a deletion.
                    if gone(p) {
                        self.removed(rule, p);
                    } else if std::fs::symlink_metadata(p).is_err() {
                        continue;
                    } else if std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()) {
                        self.scan(rule, p);
                        self.new_dirs.push((rule, p.clone(), Instant::now()));
                    } else {
                        self.candidate(rule, p);
                    }
                }
            }
        }
    }

    /// Walks `dir` with the one folder walker (symlinks never followed out of the root).
    /// A folder that cannot be listed is logged, never taken as a deletion.
    fn scan(&mut self, rule: usize, dir: &Path) {
        let root = self.rules[rule].root.clone();
        let mut found = Vec::new();
        let mut notes = Vec::new();
        crate::media::walk_root(
            &root,
            dir,
            false,
            &mut |p| found.push(p.to_path_buf()),
            &mut notes,
        );
        for note in notes {
            tracing::warn!("watcher: {note}");
        }
        for p in found {
            self.candidate(rule, &p);
        }
    }

    fn candidate(&mut self, rule: usize, path: &Path) {
        let r = &self.rules[rule];
        if let Some(input) = r.marked_by(path) {
            if r.wants(&input) {
                return self.note(rule, input);
            }
        }
        if r.wants(path) {
            self.note(rule, path.to_path_buf());
        }
    }

    fn note(&mut self, rule: usize, path: PathBuf) {
        self.pending.entry(path).or_insert(Pending {
            rule,
            seen: None,
            since: Instant::now(),
        });
    }

    fn removed(&mut self, rule: usize, path: &Path) {
        self.pending.remove(path);
        let kind = self.rules[rule].kind;
        if let Ok(Some(job)) = self.queue.latest_for(path, kind) {
            if job.state == JobState::Queued {
                tracing::info!("{}: deleted; its queued job is cancelled", path.display());
                if matches!(self.queue.cancel(job.id), Ok(true)) {
                    self.vanished.insert(path.to_path_buf());
                }
            }
        }
    }

    /// Takes every pending file whose size and mtime stayed the same for the stable period.
    fn take_stable(&mut self) {
        let now = Instant::now();
        let mut ready = Vec::new();
        let stable = self.settings.stable;
        self.pending.retain(|path, p| {
            // A path that cannot be followed (dangling link, link loop, no permission) is
            // taken as it is, so its job fails with the reason instead of waiting forever.
            let fp = fingerprint(path);
            if fp.is_none() && std::fs::symlink_metadata(path).is_err() {
                return false;
            }
            if p.seen != fp || p.seen.is_none() && fp.is_some() {
                p.seen = fp;
                p.since = now;
                return true;
            }
            if now.duration_since(p.since) < stable {
                return true;
            }
            ready.push((path.clone(), p.rule, fp));
            false
        });
        ready.sort();
        for (path, rule, fp) in ready {
            self.take(rule, &path, fp);
        }
    }

    fn take(&mut self, rule: usize, path: &Path, fp: Option<(u64, i64)>) {
        let r = &self.rules[rule];
        if !r.marker_present(path) {
            return;
        }
        if matches!(self.queue.is_output(path), Ok(true)) {
            return;
        }
        // Inputs and their outputs stay inside the root: a path through a symlinked folder,
        // or a link, that resolves elsewhere is never taken. (One that cannot be resolved
        // at all, a dangling link or a loop, is taken so its job fails with the reason.)
        let real = std::fs::canonicalize(path);
        let dir_real = path.parent().map(std::fs::canonicalize);
        let outside = real.as_ref().is_ok_and(|p| !p.starts_with(&r.root))
            || dir_real.is_some_and(|d| d.is_ok_and(|d| !d.starts_with(&r.root)));
        if outside {
            return tracing::warn!(
                "{}: skipped: it resolves outside the watched folder {}",
                path.display(),
                r.root.display()
            );
        }
        // A link to a folder inside the root: its files are reached by their own paths.
        if real.as_ref().is_ok_and(|p| p.is_dir()) {
            return;
        }
        let reappeared = self.vanished.remove(path);
        match self.queue.latest_for(path, r.kind) {
            Ok(Some(job)) => {
                let same =
                    fp.map(|f| f.0) == job.input_size && fp.map(|f| f.1) == job.input_mtime_ns;
                // Already journalled as it is now, or still waiting: nothing to do.
                if (same && !reappeared) || !job.state.is_finished() {
                    return;
                }
                if same {
                    // Back unchanged after its job was cancelled: that job runs again (the
                    // journal holds one job per kind, file, size and mtime).
                    if let Err(e) = self.queue.retry(job.id) {
                        tracing::error!("{}: cannot queue: {e}", path.display());
                    }
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => return tracing::error!("{e}"),
        }
        let options = r.options_for(path);
        match self.queue.enqueue_unique(r.kind, path, options, r.priority) {
            Ok(Some(_)) => {}
            Ok(None) => tracing::debug!(
                "{}: already queued (by another watcher of this folder)",
                path.display()
            ),
            Err(e) => tracing::error!("{}: cannot queue: {e}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_confirmed_enoent_is_a_deletion() {
        let dir = tempfile::tempdir().unwrap();
        assert!(gone(&dir.path().join("missing")));
        let file = dir.path().join("f.wav");
        std::fs::write(&file, b"x").unwrap();
        assert!(!gone(&file));
        // A dangling link is still there (its job fails with the reason).
        let link = dir.path().join("l.wav");
        std::os::unix::fs::symlink(dir.path().join("nothing"), &link).unwrap();
        assert!(!gone(&link));
        // An error that is not ENOENT (here ENAMETOOLONG; on a mount, EIO or ESTALE).
        assert!(!gone(&dir.path().join("x".repeat(300))));
    }
}
