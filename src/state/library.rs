//! The library / queue pane: files from the opened and watched folders with their jobs.
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Image,
}

impl MediaKind {
    pub fn name(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Image => "image",
        }
    }
}

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
        let eta = jobs
            .iter()
            .filter(|i| i.state == JobState::Running)
            .map(|i| i.eta)
            .sum::<Option<f64>>();
        Some((done / jobs.len() as f64, eta))
    }

    pub fn cycle_kind_filter(&mut self) {
        self.filter.kind = match self.filter.kind {
            None => Some(MediaKind::Audio),
            Some(MediaKind::Audio) => Some(MediaKind::Image),
            Some(MediaKind::Image) => None,
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
