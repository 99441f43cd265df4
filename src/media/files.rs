//! The one table of the file types Atelier reads (by extension), and the one folder walker
//! the TUI, `atelier tag`/`index` and the queue's kinds use.
use std::path::{Path, PathBuf};

/// What a file holds, by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Image,
    /// A Stable Diffusion prompt file (a plain prompt or an A1111 infotext).
    Prompt,
    /// Anything else (a checksum job takes any file).
    Other,
}

/// Every kind with its name and the extensions it reads (lower case), in the order shown to
/// users. `Other` has no extensions: it is what no other kind claims.
const TABLE: &[(MediaKind, &str, &[&str])] = &[
    (
        MediaKind::Audio,
        "audio",
        &[
            "wav", "mp3", "m4a", "flac", "ogg", "opus", "aac", "wma", "mp4", "mkv", "mov", "webm",
            "avi",
        ],
    ),
    (
        MediaKind::Image,
        "image",
        &["jpg", "jpeg", "png", "gif", "webp", "bmp", "tif", "tiff"],
    ),
    (MediaKind::Prompt, "prompt", &["prompt", "txt"]),
    (MediaKind::Other, "other", &[]),
];

impl MediaKind {
    pub const ALL: &'static [MediaKind] = &[
        MediaKind::Audio,
        MediaKind::Image,
        MediaKind::Prompt,
        MediaKind::Other,
    ];

    fn row(self) -> Option<&'static (MediaKind, &'static str, &'static [&'static str])> {
        TABLE.iter().find(|(k, _, _)| *k == self)
    }

    pub fn name(self) -> &'static str {
        self.row().map_or("?", |r| r.1)
    }

    /// The extensions of this kind (lower case, no dot).
    pub fn extensions(self) -> &'static [&'static str] {
        self.row().map_or(&[], |r| r.2)
    }

    /// The kind of `path` by its extension (case-insensitive); `Other` when none matches.
    pub fn of(path: &Path) -> MediaKind {
        let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
            return MediaKind::Other;
        };
        let ext = ext.to_ascii_lowercase();
        TABLE
            .iter()
            .find(|(_, _, exts)| exts.contains(&ext.as_str()))
            .map_or(MediaKind::Other, |r| r.0)
    }
}

/// Files under `dir`, recursively, each folder's entries in name order, hidden names (a
/// leading dot) skipped, kept when `keep` accepts them. A folder that cannot be listed is
/// reported in `errors` (naming it) and the walk goes on.
pub fn walk(
    dir: &Path,
    keep: &dyn Fn(&Path) -> bool,
    out: &mut Vec<PathBuf>,
    errors: &mut Vec<String>,
) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => return errors.push(format!("{}: cannot list: {e}", dir.display())),
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            walk(&p, keep, out, errors);
        } else if keep(&p) {
            out.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_extension_ignore_case() {
        assert_eq!(MediaKind::of(Path::new("/a/b.WAV")), MediaKind::Audio);
        assert_eq!(MediaKind::of(Path::new("c.Jpeg")), MediaKind::Image);
        assert_eq!(MediaKind::of(Path::new("d.prompt")), MediaKind::Prompt);
        assert_eq!(MediaKind::of(Path::new("e.bin")), MediaKind::Other);
        assert_eq!(MediaKind::of(Path::new("noext")), MediaKind::Other);
    }

    #[test]
    fn each_extension_belongs_to_one_kind() {
        let mut seen = std::collections::HashSet::new();
        for k in MediaKind::ALL {
            for e in k.extensions() {
                assert!(seen.insert(*e), "{e} is in two kinds");
            }
        }
    }

    #[test]
    fn walk_sorts_skips_hidden_and_reports_unlistable() {
        let tmp = tempfile::tempdir().unwrap();
        let sub = tmp.path().join("sub");
        std::fs::create_dir_all(sub.join(".hidden")).unwrap();
        for p in [
            "b.wav",
            "a.png",
            ".c.wav",
            "sub/d.mp3",
            "sub/.hidden/e.wav",
            "f.bin",
        ] {
            std::fs::write(tmp.path().join(p), b"x").unwrap();
        }
        let (mut out, mut errors) = (Vec::new(), Vec::new());
        let keep = |p: &Path| MediaKind::of(p) != MediaKind::Other;
        walk(tmp.path(), &keep, &mut out, &mut errors);
        let names: Vec<String> = out
            .iter()
            .map(|p| p.strip_prefix(tmp.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["a.png", "b.wav", "sub/d.mp3"]);
        assert!(errors.is_empty());
        walk(&tmp.path().join("missing"), &keep, &mut out, &mut errors);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("missing: cannot list"), "{errors:?}");
    }
}
