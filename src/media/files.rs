//! The one table of the file types Atelier reads (by extension), and the one folder walker
//! the TUI, `atelier tag`/`index` and the queue's kinds use.
pub use crate::domain::MediaKind;
use std::path::{Path, PathBuf};

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
