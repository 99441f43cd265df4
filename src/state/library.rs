//! The library / queue pane: files from the opened folders and the job journal, each with
//! its newest job.
pub use crate::domain::MediaKind;
use crate::domain::{JobId, JobKind};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Found, no job yet.
    Idle,
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: &[JobState] = &[
        JobState::Idle,
        JobState::Queued,
        JobState::Running,
        JobState::Done,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn name(self) -> &'static str {
        match self {
            JobState::Idle => "idle",
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn is_active(self) -> bool {
        matches!(self, JobState::Queued | JobState::Running)
    }

    /// The pane's state of a journal state.
    pub fn of(state: crate::domain::JobState) -> JobState {
        use crate::domain::JobState as J;
        match state {
            J::Queued => JobState::Queued,
            J::Running => JobState::Running,
            J::Done => JobState::Done,
            J::Failed => JobState::Failed,
            J::Cancelled => JobState::Cancelled,
        }
    }
}

/// A job of the durable queue as the pane shows it (from its events and `Queue::list`,
/// whichever process queued or runs it).
#[derive(Debug, Clone, PartialEq)]
pub struct JobUpdate {
    pub id: JobId,
    pub kind: JobKind,
    pub path: PathBuf,
    pub state: JobState,
    pub priority: i32,
    /// 0..=1 while running.
    pub progress: f64,
    /// Seconds left, when the job can tell.
    pub eta: Option<f64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub path: PathBuf,
    pub kind: MediaKind,
    pub state: JobState,
    /// 0..=1 while running.
    pub progress: f64,
    /// Seconds left, when the job can tell.
    pub eta: Option<f64>,
    pub priority: i32,
    pub error: Option<String>,
    /// The newest job of the file in the journal, once it has one.
    pub job: Option<JobId>,
    pub job_kind: Option<JobKind>,
}

impl Item {
    pub fn new(path: PathBuf, kind: MediaKind) -> Self {
        Item {
            path,
            kind,
            state: JobState::Idle,
            progress: 0.0,
            eta: None,
            priority: 0,
            error: None,
            job: None,
            job_kind: None,
        }
    }
}

/// Which items the pane shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Filter {
    pub kind: Option<MediaKind>,
    pub state: Option<JobState>,
}

#[derive(Debug, Clone, Default)]
pub struct Library {
    pub items: Vec<Item>,
    pub filter: Filter,
    /// Index into `visible()`.
    pub cursor: usize,
    pub marks: std::collections::BTreeSet<PathBuf>,
    /// Position of each path in `items` (jobs report by path; 10,000 files stay fast).
    index: std::collections::HashMap<PathBuf, usize>,
}

impl Library {
    /// Indices into `items` that pass the filter.
    pub fn visible(&self) -> Vec<usize> {
        self.items
            .iter()
            .enumerate()
            .filter(|(_, it)| {
                self.filter.kind.is_none_or(|k| it.kind == k)
                    && self.filter.state.is_none_or(|s| it.state == s)
            })
            .map(|(i, _)| i)
            .collect()
    }

    pub fn current(&self) -> Option<&Item> {
        self.visible()
            .get(self.cursor)
            .and_then(|&i| self.items.get(i))
    }

    pub fn find_mut(&mut self, path: &std::path::Path) -> Option<&mut Item> {
        let i = *self.index.get(path)?;
        self.items.get_mut(i)
    }

    /// Adds files not yet listed; returns the ones that are new.
    pub fn add(&mut self, found: Vec<(PathBuf, MediaKind)>) -> Vec<PathBuf> {
        let mut new = Vec::new();
        for (path, kind) in found {
            if !self.index.contains_key(&path) {
                self.index.insert(path.clone(), self.items.len());
                new.push(path.clone());
                self.items.push(Item::new(path, kind));
            }
        }
        new
    }

    pub fn clamp_cursor(&mut self) {
        let n = self.visible().len();
        self.cursor = self.cursor.min(n.saturating_sub(1));
    }

    /// The selection: marked files, else the one under the cursor.
    pub fn selection(&self) -> Vec<PathBuf> {
        if !self.marks.is_empty() {
            return self.marks.iter().cloned().collect();
        }
        self.current()
            .map(|i| vec![i.path.clone()])
            .unwrap_or_default()
    }

    /// Counts per state, for the status bar.
    pub fn counts(&self) -> Vec<(JobState, usize)> {
        JobState::ALL
            .iter()
            .map(|&s| (s, self.items.iter().filter(|i| i.state == s).count()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Overall progress of the active and finished jobs (0..=1) and the summed ETA.
    pub fn overall(&self) -> Option<(f64, Option<f64>)> {
        let jobs: Vec<&Item> = self
            .items
            .iter()
            .filter(|i| i.state != JobState::Idle)
            .collect();
        if jobs.is_empty() {
            return None;
        }
        let done: f64 = jobs
            .iter()
            .map(|i| match i.state {
                JobState::Running => i.progress,
                JobState::Queued => 0.0,
                _ => 1.0,
            })
            .sum();
        let running: Vec<&&Item> = jobs
            .iter()
            .filter(|i| i.state == JobState::Running)
            .collect();
        // Known only when every running job can tell; none while nothing runs.
        let eta = if running.is_empty() {
            None
        } else {
            running.iter().map(|i| i.eta).sum::<Option<f64>>()
        };
        Some((done / jobs.len() as f64, eta))
    }

    /// Applies a journal update to its file's item (added when the journal knows a file the
    /// opened folders do not); an update of an older job than the item's is ignored.
    /// Returns the item's state before, or None when ignored.
    pub fn apply(&mut self, u: &JobUpdate) -> Option<JobState> {
        if !self.index.contains_key(&u.path) {
            self.add(vec![(u.path.clone(), MediaKind::of(&u.path))]);
        }
        let it = self.find_mut(&u.path)?;
        if it.job.is_some_and(|cur| u.id < cur) {
            return None;
        }
        let before = it.state;
        it.job = Some(u.id);
        it.job_kind = Some(u.kind);
        it.state = u.state;
        it.priority = u.priority;
        it.progress = u.progress;
        it.eta = u.eta;
        it.error = u.error.clone();
        Some(before)
    }

    /// All kinds, then each kind in turn.
    pub fn cycle_kind_filter(&mut self) {
        self.filter.kind = match self.filter.kind {
            None => MediaKind::ALL.first().copied(),
            Some(k) => {
                let i = MediaKind::ALL.iter().position(|&x| x == k).unwrap_or(0);
                MediaKind::ALL.get(i + 1).copied()
            }
        };
        self.cursor = 0;
    }

    pub fn cycle_state_filter(&mut self) {
        self.filter.state = match self.filter.state {
            None => Some(JobState::ALL[0]),
            Some(s) => {
                let i = JobState::ALL.iter().position(|&x| x == s).unwrap_or(0);
                JobState::ALL.get(i + 1).copied()
            }
        };
        self.cursor = 0;
    }
}
