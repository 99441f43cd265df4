//! The one table of the file types Atelier reads (by extension), and the one folder walker
//! the TUI, `atelier tag`/`index` and the queue's kinds use.
pub use crate::domain::MediaKind;
use std::path::{Path, PathBuf};

/// Files under `dir`, recursively, each folder's entries in name order, hidden names (a
/// leading dot) skipped, kept when `keep` accepts them. A folder that cannot be listed is
/// reported in `errors` (naming it) and the walk goes on. Symlinks follow [`walk_root`]'s
/// policy, with `dir` as the root.
pub fn walk(
    dir: &Path,
    keep: &dyn Fn(&Path) -> bool,
    out: &mut Vec<PathBuf>,
    errors: &mut Vec<String>,
) {
    walk_root(
        dir,
        dir,
        true,
        &mut |p| {
            if keep(p) {
                out.push(p.to_path_buf())
            }
        },
        errors,
    );
}

/// The one folder walk (the TUI, `atelier tag`/`index`, the watcher's scans): every file
/// under `dir`, in name order, passed to `visit`; `dir` lies in `root`. Symlinks are never
/// followed as folders, so a walk never leaves `root` and never loops. A symlinked file is
/// visited when it resolves inside `root` (or cannot be resolved at all: a dangling link or
/// a loop, so its job fails with the reason); one resolving outside `root` is skipped, with
/// a note in `errors`. With `skip_hidden`, names with a leading dot are skipped.
pub fn walk_root(
    root: &Path,
    dir: &Path,
    skip_hidden: bool,
    visit: &mut dyn FnMut(&Path),
    errors: &mut Vec<String>,
) {
    let real_root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let hidden = |e: &walkdir::DirEntry| {
        e.depth() > 0 && e.file_name().to_str().is_some_and(|n| n.starts_with('.'))
    };
    let entries = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| !(skip_hidden && hidden(e)));
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let path = e.path().unwrap_or(dir).display().to_string();
                let why = e
                    .io_error()
                    .map_or_else(|| e.to_string(), |io| io.to_string());
                errors.push(format!("{path}: cannot list: {why}"));
                continue;
            }
        };
        let t = entry.file_type();
        if t.is_dir() {
            continue;
        }
        if t.is_symlink() {
            match std::fs::canonicalize(entry.path()) {
                Ok(target) if !target.starts_with(&real_root) => {
                    errors.push(format!(
                        "{}: skipped: a symbolic link out of {} (to {})",
                        entry.path().display(),
                        root.display(),
                        target.display()
                    ));
                    continue;
                }
                // Folders are reached by their own path, never through a link.
                Ok(target) if target.is_dir() => continue,
                _ => {}
            }
        }
        visit(entry.path());
    }
}

/// Whether `path`, resolved, lies inside `root` (resolved). A path that does not exist yet
/// is judged by its nearest existing folder.
pub fn resolves_inside(path: &Path, root: &Path) -> bool {
    let Ok(root) = std::fs::canonicalize(root) else {
        return false;
    };
    let mut p = path;
    loop {
        match std::fs::canonicalize(p) {
            Ok(real) => return real.starts_with(&root),
            Err(_) => match p.parent() {
                Some(up) if !up.as_os_str().is_empty() => p = up,
                _ => return false,
            },
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

    #[test]
    fn walk_never_follows_links_out_of_the_root_or_into_loops() {
        let tmp = tempfile::tempdir().unwrap();
        let (root, outside) = (tmp.path().join("root"), tmp.path().join("outside"));
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("sub/a.wav"), b"x").unwrap();
        std::fs::write(outside.join("secret.wav"), b"x").unwrap();
        let link = |target: &Path, name: &str| {
            std::os::unix::fs::symlink(target, root.join(name)).unwrap()
        };
        link(&outside, "out_dir");
        link(&outside.join("secret.wav"), "out_file.wav");
        link(&root.join("sub/a.wav"), "in_file.wav");
        link(&root, "loop_dir");
        link(&root.join("sub"), "in_dir");
        let (mut out, mut errors) = (Vec::new(), Vec::new());
        walk(&root, &|_| true, &mut out, &mut errors);
        let names: Vec<String> = out
            .iter()
            .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["in_file.wav", "sub/a.wav"]);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors.iter().all(|e| e.contains("a symbolic link out of")),
            "{errors:?}"
        );
        assert!(resolves_inside(&root.join("in_dir/new/x.srt"), &root));
        assert!(!resolves_inside(&root.join("out_dir/new/x.srt"), &root));
    }
}
