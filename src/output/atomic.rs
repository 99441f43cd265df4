//! Crash-safe file writes (the one atomic-write helper every output writer uses), no-replace
//! renames, and openai-whisper's output file naming.
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The prefix of every temp file Atelier writes (`.atelier-XXXXXX.tmp`, or
/// `.atelier-jobN-XXXXXX.tmp` for a job's outputs). Short and independent of the final
/// name, so a 255-byte file name still has a temp name.
pub const TEMP_PREFIX: &str = ".atelier-";

/// Writes `bytes` to `path` so that readers see either the old file or the whole new one:
/// a temporary file in the same folder is written, synced and renamed over `path`, then the
/// folder is synced. On any error the temporary file is removed. Errors name `path`.
/// A folder, link or device at `path` is never replaced or written through: an error.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let not_a_file = || {
        io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{}: is not a regular file (a folder, link or device): not written",
                path.display()
            ),
        )
    };
    if std::fs::symlink_metadata(path).is_ok_and(|m| !m.file_type().is_file()) {
        return Err(not_a_file());
    }
    let written = write_new(path, bytes, TEMP_PREFIX, &|_| true)?;
    if written != path {
        // Something that is not a file took the name meanwhile: take back the copy.
        let _ = std::fs::remove_file(&written);
        return Err(not_a_file());
    }
    Ok(())
}

/// [`write_atomic`] that never replaces a file `may_replace` refuses: on a clash the output
/// takes the next free name `NAME.1.EXT`, `NAME.2.EXT`, … (claimed with a no-replace rename,
/// so two writers never take one name). Returns the path written. `temp_prefix` starts the
/// temp file's name (see [`TEMP_PREFIX`]).
pub fn write_new(
    path: &Path,
    bytes: &[u8],
    temp_prefix: &str,
    may_replace: &dyn Fn(&Path) -> bool,
) -> io::Result<PathBuf> {
    write_new_inner(path, bytes, temp_prefix, may_replace)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Clashes tried before giving up (a folder holding `NAME.1.EXT` … `NAME.999.EXT`).
const MAX_SUFFIX: u32 = 999;

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn write_new_inner(
    path: &Path,
    bytes: &[u8],
    temp_prefix: &str,
    may_replace: &dyn Fn(&Path) -> bool,
) -> io::Result<PathBuf> {
    let dir = parent_dir(path);
    if path.file_name().is_none() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path has no file name",
        ));
    }
    let mut builder = tempfile::Builder::new();
    // O_CREAT|O_EXCL with a random name: never opens an existing file or follows a link.
    builder.prefix(temp_prefix).suffix(".tmp").rand_bytes(8);
    #[cfg(unix)]
    {
        // Like a plain create: 0666 less the umask, not tempfile's private 0600.
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    // Dropping `tmp` on an early return deletes it.
    let mut tmp = builder.tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    let mut n = 0;
    let written = loop {
        let target = if n == 0 {
            path.to_path_buf()
        } else {
            suffixed(path, n)
        };
        match tmp.persist_noclobber(&target) {
            Ok(_) => break target,
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
                tmp = e.file;
                if may_replace(&target) && is_plain_file(&target) {
                    tmp.persist(&target).map_err(|e| e.error)?;
                    break target;
                }
                n += 1;
                if n > MAX_SUFFIX {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!(
                            "every name up to {} is taken",
                            suffixed(path, MAX_SUFFIX).display()
                        ),
                    ));
                }
            }
            Err(e) => return Err(e.error),
        }
    };
    sync_dir(dir)?;
    Ok(written)
}

/// A regular file (not a link, folder or device) that an output may replace.
fn is_plain_file(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file())
}

/// Extensions of two parts that a suffix goes before (`img.1.tags.json`).
const COMPOUND: &[&str] = &[".tags.json"];

/// `NAME.N.EXT` for `NAME.EXT`: the name tools like wget and many downloaders give a copy.
pub fn suffixed(path: &Path, n: u32) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let lower = name.to_ascii_lowercase();
    let split = COMPOUND
        .iter()
        .find(|c| lower.ends_with(*c) && lower.len() > c.len())
        .map(|c| name.len() - c.len())
        .unwrap_or_else(|| splitext_index(name.as_bytes()));
    #[cfg(unix)]
    let (stem, ext) = {
        use std::os::unix::ffi::OsStrExt;
        let raw = path.file_name().unwrap_or_default().as_bytes();
        // `split` is a byte index into the lossy name; the raw name has the same ASCII dots
        // only when it is valid UTF-8, else split the raw bytes themselves.
        let split = if std::str::from_utf8(raw).is_ok() {
            split
        } else {
            splitext_index(raw)
        };
        (
            OsStr::from_bytes(&raw[..split]).to_os_string(),
            OsStr::from_bytes(&raw[split..]).to_os_string(),
        )
    };
    #[cfg(not(unix))]
    let (stem, ext) = (
        OsString::from(&name[..split]),
        OsString::from(&name[split..]),
    );
    let mut file = stem;
    file.push(format!(".{n}"));
    file.push(ext);
    path.with_file_name(file)
}

/// Renames `from` to `to` only if `to` does not exist: `renameat2(RENAME_NOREPLACE)`, or
/// where the filesystem refuses that flag, a hard link then an unlink.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| {
            std::ffi::CString::new(p.as_os_str().as_bytes())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))
        };
        let (f, t) = (c(from)?, c(to)?);
        // SAFETY: two valid NUL-terminated paths, relative to the current folder.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                f.as_ptr(),
                libc::AT_FDCWD,
                t.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if !matches!(
            e.raw_os_error(),
            Some(libc::EINVAL | libc::ENOSYS | libc::ENOTSUP)
        ) {
            return Err(e);
        }
    }
    std::fs::hard_link(from, to)?;
    std::fs::remove_file(from)
}

/// Moves `from` to `to`, or to the first free `NAME.N.EXT` beside it; never replaces a
/// file. Returns where it went.
pub fn move_noreplace(from: &Path, to: &Path) -> io::Result<PathBuf> {
    for n in 0..=MAX_SUFFIX {
        let target = if n == 0 {
            to.to_path_buf()
        } else {
            suffixed(to, n)
        };
        match rename_noreplace(from, &target) {
            Ok(()) => return Ok(target),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "every name up to {} is taken",
            suffixed(to, MAX_SUFFIX).display()
        ),
    ))
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// `{dir}/{input's file name without its extension}.{ext}`, as openai-whisper names its
/// outputs (Python's `os.path.splitext`: leading dots never start an extension).
pub fn output_path(dir: &Path, input_path: &Path, ext: &str) -> PathBuf {
    let name = input_path.file_name().unwrap_or_default();
    let mut file = py_splitext_root(name);
    file.push(".");
    file.push(ext);
    dir.join(file)
}

/// The part of a file name before its extension, as Python's `os.path.splitext(name)[0]`.
fn py_splitext_root(name: &OsStr) -> OsString {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let bytes = name.as_bytes();
        OsStr::from_bytes(&bytes[..splitext_index(bytes)]).to_os_string()
    }
    #[cfg(not(unix))]
    {
        let s = name.to_string_lossy();
        s[..splitext_index(s.as_bytes())].into()
    }
}

/// Where the extension starts: the last '.', unless only dots precede it.
fn splitext_index(name: &[u8]) -> usize {
    match name.iter().rposition(|&b| b == b'.') {
        Some(dot) if name[..dot].iter().any(|&b| b != b'.') => dot,
        _ => name.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_new_never_replaces_a_refused_file_and_temp_names_stay_short() {
        let dir = tempfile::tempdir().unwrap();
        // A 255-byte name: a temp name built from it would not fit.
        let long = dir.path().join(format!("{}.srt", "n".repeat(251)));
        std::fs::write(&long, b"user's").unwrap();
        let got = write_new(&long, b"ours", TEMP_PREFIX, &|_| false);
        // NAME.1.srt is 257 bytes: too long, named in the error, the user's file intact.
        assert!(got.is_err());
        assert_eq!(std::fs::read(&long).unwrap(), b"user's");
        let p = dir.path().join("talk.srt");
        std::fs::write(&p, b"user's").unwrap();
        let got = write_new(&p, b"ours", TEMP_PREFIX, &|_| false).unwrap();
        assert_eq!(got, dir.path().join("talk.1.srt"));
        assert_eq!(std::fs::read(&p).unwrap(), b"user's");
        let got = write_new(&p, b"again", TEMP_PREFIX, &|q| q == got).unwrap();
        assert_eq!(got, dir.path().join("talk.1.srt"));
        assert_eq!(std::fs::read(&got).unwrap(), b"again");
        // A symlink in the output's place is never written through.
        let target = dir.path().join("target");
        std::fs::write(&target, b"t").unwrap();
        let link = dir.path().join("l.txt");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let got = write_new(&link, b"x", TEMP_PREFIX, &|_| true).unwrap();
        assert_eq!(got, dir.path().join("l.1.txt"));
        assert_eq!(std::fs::read(&target).unwrap(), b"t");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn suffixes_go_before_the_extension() {
        let cases = [
            ("/o/talk.srt", "/o/talk.2.srt"),
            ("/o/a.b.srt", "/o/a.b.2.srt"),
            ("/o/img.tags.json", "/o/img.2.tags.json"),
            ("/o/noext", "/o/noext.2"),
        ];
        for (p, want) in cases {
            assert_eq!(suffixed(Path::new(p), 2), Path::new(want), "{p}");
        }
    }

    #[test]
    fn move_noreplace_takes_the_next_free_name() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.wav"), dir.path().join("done.wav"));
        std::fs::write(&a, b"new").unwrap();
        std::fs::write(&b, b"old").unwrap();
        assert_eq!(
            move_noreplace(&a, &b).unwrap(),
            dir.path().join("done.1.wav")
        );
        assert_eq!(std::fs::read(&b).unwrap(), b"old");
        assert!(!a.exists());
    }

    #[test]
    fn output_path_splits_like_python() {
        let d = Path::new("/out");
        let cases = [
            ("talk.wav", "/out/talk.srt"),
            ("/in/a.b.mp3", "/out/a.b.srt"),
            (".hidden", "/out/.hidden.srt"),
            ("..wav", "/out/..wav.srt"),
            ("a.", "/out/a.srt"),
            ("noext", "/out/noext.srt"),
            ("..a.b", "/out/..a.srt"),
        ];
        for (input, want) in cases {
            assert_eq!(
                output_path(d, Path::new(input), "srt"),
                Path::new(want),
                "{input}"
            );
        }
    }
}
