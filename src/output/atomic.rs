//! Crash-safe file writes and openai-whisper's output file naming.
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` so that readers see either the old file or the whole new one:
/// a temporary file in the same folder is written, synced and renamed over `path`, then the
/// folder is synced. On any error the temporary file is removed. Errors name `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_inner(path, bytes)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn write_atomic_inner(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"))?;
    let mut prefix = OsStr::new(".").to_os_string();
    prefix.push(name);
    prefix.push(".");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
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
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
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
fn py_splitext_root(name: &OsStr) -> std::ffi::OsString {
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
