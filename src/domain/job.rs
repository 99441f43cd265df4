//! What a job is called and where it is in its life: the names the journal, the CLI, the
//! config and the TUI share.
use super::MediaKind;
use serde::{Deserialize, Serialize};

/// A job's number in its journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub i64);

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a job does with its file. [`JobKind::ALL`] is the one table of names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobKind {
    /// Whisper: transcript files (txt, srt, vtt, tsv, json).
    Transcribe,
    /// CLIP zero-shot tags: `NAME.tags.json` and a caption `NAME.txt`.
    Tag,
    /// CLIP embedding into the search index.
    Index,
    /// Stable Diffusion from a prompt file (its runner is wired where the engine is built in).
    Generate,
    /// SHA-256 of the file into `NAME.sha256`: a cheap kind for tests and smoke checks that
    /// goes through the same queue, journal and output path as the others.
    Checksum,
}

impl JobKind {
    /// Every kind with its name, in the order shown to users.
    pub const ALL: &'static [(JobKind, &'static str)] = &[
        (JobKind::Transcribe, "transcribe"),
        (JobKind::Tag, "tag"),
        (JobKind::Index, "index"),
        (JobKind::Generate, "generate"),
        (JobKind::Checksum, "checksum"),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(k, _)| *k == self)
            .map_or("?", |(_, n)| n)
    }

    pub fn parse(name: &str) -> Option<JobKind> {
        Self::ALL.iter().find(|(_, n)| *n == name).map(|(k, _)| *k)
    }

    /// File extensions this kind reads (lower case); watch profiles include these by default.
    pub fn input_extensions(self) -> &'static [&'static str] {
        self.input_media().map_or(&[], MediaKind::extensions)
    }

    /// The kind of file this kind reads (none: any file).
    pub fn input_media(self) -> Option<MediaKind> {
        match self {
            JobKind::Transcribe => Some(MediaKind::Audio),
            JobKind::Tag | JobKind::Index => Some(MediaKind::Image),
            JobKind::Generate => Some(MediaKind::Prompt),
            JobKind::Checksum => None,
        }
    }

    /// File name endings of this kind's outputs, so a watcher never takes its own outputs.
    pub fn output_suffixes(self) -> &'static [&'static str] {
        match self {
            JobKind::Transcribe => &[".txt", ".srt", ".vtt", ".tsv", ".json"],
            JobKind::Tag => &[".tags.json", ".txt"],
            JobKind::Index => &[],
            JobKind::Generate => &[".png"],
            JobKind::Checksum => &[".sha256"],
        }
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: &'static [(JobState, &'static str)] = &[
        (JobState::Queued, "queued"),
        (JobState::Running, "running"),
        (JobState::Done, "done"),
        (JobState::Failed, "failed"),
        (JobState::Cancelled, "cancelled"),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("?", |(_, n)| n)
    }

    pub fn parse(name: &str) -> Option<JobState> {
        Self::ALL.iter().find(|(_, n)| *n == name).map(|(s, _)| *s)
    }

    /// Done, failed or cancelled: nothing more happens unless the job is retried.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Done | JobState::Failed | JobState::Cancelled
        )
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
