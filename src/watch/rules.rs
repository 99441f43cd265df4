//! Routing rules: which files of a watched folder become which jobs, and where outputs go.
use crate::jobs::{is_temp_name, JobKind, JobOptions, Priority};
use globset::{Glob, GlobSet, GlobSetBuilder};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// When to use the polling watcher instead of inotify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PollMode {
    /// Poll on network filesystems (NFS, SMB/CIFS, sshfs and other FUSE mounts), where
    /// inotify never hears about changes made by other machines.
    #[default]
    Auto,
    Always,
    Never,
}

impl PollMode {
    pub fn parse(s: &str) -> Option<PollMode> {
        match s {
            "" | "auto" => Some(PollMode::Auto),
            "always" => Some(PollMode::Always),
            "never" => Some(PollMode::Never),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{0}: glob '{1}': {2}")]
    Glob(String, String, globset::Error),
    #[error("{}: cannot watch: {source}", path.display())]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A watched folder, resolved: absolute paths and compiled globs.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    /// The watched folder (canonical).
    pub root: PathBuf,
    pub kind: JobKind,
    /// The job's options; `output_dir` and `done_dir` here are the roots of mirror trees.
    pub options: JobOptions,
    pub priority: Priority,
    include: Option<GlobSet>,
    exclude: GlobSet,
    pub poll: PollMode,
    /// Marker-file mode: the suffix of the marker that says a file is complete.
    pub marker: Option<String>,
}

/// What a rule is built from (a `[[watch]]` profile or `atelier watch DIR` flags).
#[derive(Debug, Clone, Default)]
pub struct RuleSpec {
    pub name: String,
    pub root: PathBuf,
    pub kind: Option<JobKind>,
    pub options: JobOptions,
    pub priority: Priority,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub poll: PollMode,
    pub marker: Option<String>,
}

fn globset(name: &str, globs: &[String]) -> Result<GlobSet, RuleError> {
    let mut b = GlobSetBuilder::new();
    for g in globs {
        b.add(Glob::new(g).map_err(|e| RuleError::Glob(name.into(), g.clone(), e))?);
    }
    b.build()
        .map_err(|e| RuleError::Glob(name.into(), globs.join(", "), e))
}

/// Whether `name` looks like a file still being written or a temp file: partial downloads
/// and uploads (`.part`, `.partial`, `.crdownload`, `.download`, `.tmp`), Office lock files
/// (`~$*`), editor backups (`*~`), and every hidden name (rsync writes `.NAME.XXXXXX`;
/// Atelier's own temp files are `.NAME.atelier-jobN.tmp`).
pub fn is_partial_name(name: &str) -> bool {
    const SUFFIXES: &[&str] = &[".part", ".partial", ".crdownload", ".download", ".tmp"];
    let lower = name.to_ascii_lowercase();
    name.starts_with('.')
        || name.starts_with("~$")
        || name.ends_with('~')
        || is_temp_name(name)
        || SUFFIXES.iter().any(|s| lower.ends_with(s))
}

impl Rule {
    pub fn new(spec: RuleSpec) -> Result<Rule, RuleError> {
        let root = std::fs::canonicalize(&spec.root).map_err(|source| RuleError::Folder {
            path: spec.root.clone(),
            source,
        })?;
        if !root.is_dir() {
            return Err(RuleError::Folder {
                path: spec.root,
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a folder"),
            });
        }
        let kind = spec.kind.unwrap_or(JobKind::Transcribe);
        let include = if spec.include.is_empty() {
            None
        } else {
            Some(globset(&spec.name, &spec.include)?)
        };
        let mut options = spec.options;
        if let Some(d) = options.output_dir.take() {
            options.output_dir = Some(absolute(&d));
        }
        if options.on_done == crate::jobs::OnDone::Move {
            options.done_dir = Some(match options.done_dir.take() {
                Some(d) => absolute(&d),
                None => root.join("done"),
            });
        }
        options.profile = Some(spec.name.clone());
        Ok(Rule {
            name: spec.name.clone(),
            root,
            kind,
            options,
            priority: spec.priority,
            include,
            exclude: globset(&spec.name, &spec.exclude)?,
            poll: spec.poll,
            marker: spec.marker.filter(|m| !m.is_empty()),
        })
    }

    /// The path relative to the root, if it is under it.
    fn relative<'a>(&self, path: &'a Path) -> Option<&'a Path> {
        path.strip_prefix(&self.root).ok()
    }

    /// Whether `path` is under a folder this rule writes to (mirror outputs, done folder).
    fn in_own_folder(&self, path: &Path) -> bool {
        [&self.options.output_dir, &self.options.done_dir]
            .into_iter()
            .flatten()
            .any(|d| path.starts_with(d))
    }

    /// Whether `path` (a file under the root) should become a job of this rule, judged by
    /// its name and place alone.
    pub fn wants(&self, path: &Path) -> bool {
        let Some(rel) = self.relative(path) else {
            return false;
        };
        let Some(name) = path.file_name().map(|n| n.to_string_lossy()) else {
            return false;
        };
        if self.in_own_folder(path) || is_partial_name(&name) {
            return false;
        }
        // Files in hidden folders (.git, .sync, …) are never inputs.
        let hidden_dir = rel
            .parent()
            .into_iter()
            .flat_map(Path::components)
            .any(|c| c.as_os_str().to_string_lossy().starts_with('.'));
        if hidden_dir {
            return false;
        }
        if let Some(m) = &self.marker {
            if name.ends_with(m.as_str()) {
                return false;
            }
        }
        if self
            .kind
            .output_suffixes()
            .iter()
            .any(|s| name.to_ascii_lowercase().ends_with(s))
            && self.include.is_none()
        {
            return false;
        }
        if self.exclude.is_match(rel) {
            return false;
        }
        match &self.include {
            Some(set) => set.is_match(rel),
            None => {
                let exts = self.kind.input_extensions();
                exts.is_empty()
                    || path
                        .extension()
                        .map(|e| e.to_string_lossy().to_ascii_lowercase())
                        .is_some_and(|e| exts.contains(&e.as_str()))
            }
        }
    }

    /// For a marker file, the input it marks.
    pub fn marked_by(&self, path: &Path) -> Option<PathBuf> {
        let m = self.marker.as_ref()?;
        let name = path.file_name()?.to_string_lossy();
        let stem = name.strip_suffix(m.as_str())?;
        (!stem.is_empty()).then(|| path.with_file_name(stem))
    }

    /// Whether the input is complete by the marker rule (always true without one).
    pub fn marker_present(&self, path: &Path) -> bool {
        match &self.marker {
            None => true,
            Some(m) => {
                let mut name = path.file_name().unwrap_or_default().to_os_string();
                name.push(m);
                path.with_file_name(name).exists()
            }
        }
    }

    /// The job's options for `input`: mirror folders get the input's place under the root.
    pub fn options_for(&self, input: &Path) -> JobOptions {
        let mut o = self.options.clone();
        let sub = self
            .relative(input)
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        o.roots = std::iter::once(self.root.clone())
            .chain(o.output_dir.clone())
            .chain(o.done_dir.clone())
            .collect();
        o.output_dir = o.output_dir.map(|d| d.join(&sub));
        o.done_dir = o.done_dir.map(|d| d.join(&sub));
        o
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    }
}

/// How long a file must stay unchanged before it is taken.
pub fn default_stable() -> Duration {
    Duration::from_secs(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_names() {
        for n in [
            "a.wav.part",
            "a.WAV.PART",
            "x.tmp",
            "~$doc.docx",
            ".a.wav.Xy12Ab",
            ".a.wav.atelier-job3.tmp",
            "a.crdownload",
            "a.wav~",
        ] {
            assert!(is_partial_name(n), "{n}");
        }
        for n in ["a.wav", "part.wav", "tmp", "a.parts.mp3"] {
            assert!(!is_partial_name(n), "{n}");
        }
    }

    #[test]
    fn rule_filters_outputs_partials_and_globs() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let rule = Rule::new(RuleSpec {
            name: "t".into(),
            root: root.clone(),
            kind: Some(JobKind::Transcribe),
            exclude: vec!["skip/**".into()],
            ..RuleSpec::default()
        })
        .unwrap();
        assert!(rule.wants(&root.join("a.wav")));
        assert!(rule.wants(&root.join("sub/a.MP3")));
        assert!(!rule.wants(&root.join("a.srt")));
        assert!(!rule.wants(&root.join("a.wav.part")));
        assert!(!rule.wants(&root.join("skip/a.wav")));
        assert!(!rule.wants(&root.join(".hidden/a.wav")));
        assert!(!rule.wants(Path::new("/elsewhere/a.wav")));
    }

    #[test]
    fn mirror_and_done_folders_follow_the_input() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let out = root.join("out");
        let rule = Rule::new(RuleSpec {
            name: "t".into(),
            root: root.clone(),
            kind: Some(JobKind::Checksum),
            options: JobOptions {
                output_dir: Some(out.clone()),
                on_done: crate::jobs::OnDone::Move,
                ..JobOptions::default()
            },
            ..RuleSpec::default()
        })
        .unwrap();
        let o = rule.options_for(&root.join("a/b/c.bin"));
        assert_eq!(o.output_dir, Some(out.join("a/b")));
        assert_eq!(o.done_dir, Some(root.join("done/a/b")));
        assert!(!rule.wants(&out.join("x.bin")));
        assert!(!rule.wants(&root.join("done/x.bin")));
        assert!(rule.wants(&root.join("x.bin")));
        assert!(!rule.wants(&root.join("x.bin.sha256")));
    }
}
