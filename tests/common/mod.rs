//! Shared test helpers: the project venv's Python and fixtures made by tools/export.
#![allow(dead_code)]
pub mod hostile_images;
pub mod json_schema;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv Python (tools/dev.sh creates it). Tests that need it fail loudly without it.
pub fn python() -> PathBuf {
    let p = std::env::var_os("ATELIER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/python"));
    assert!(
        p.exists(),
        "{} is missing: run tools/dev.sh test (it creates the venv)",
        p.display()
    );
    p
}

/// Runs `python -m tools.export ARGS…` from the repository root and asserts success.
pub fn export_tool(args: &[&str]) {
    let out = Command::new(python())
        .current_dir(root())
        .args(["-m", "tools.export"])
        .args(args)
        .output()
        .expect("run the export tool");
    assert!(
        out.status.success(),
        "tools.export {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A folder with selftest.ts and selftest_ref.safetensors, exported once per test binary.
pub fn selftest_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        export_tool(&["selftest", "--out", dir.path().to_str().unwrap()]);
        dir
    })
    .path()
}

/// The models the test suite runs on (tools/dev.sh test prepares them).
pub fn test_models() -> PathBuf {
    let dir = std::env::var_os("ATELIER_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".cache/models"));
    assert!(
        dir.is_dir(),
        "{} is missing: run tools/dev.sh test (it prepares the test models)",
        dir.display()
    );
    dir
}

pub fn atelier() -> Command {
    Command::new(env!("CARGO_BIN_EXE_atelier"))
}

pub const LIBRIVOX: &str = "/usr/share/pocketsphinx/test/data/librivox";

/// The five LibriVox clips of Debian's pocketsphinx-testdata.
pub fn librivox_clips() -> Vec<PathBuf> {
    let mut clips: Vec<PathBuf> = std::fs::read_dir(LIBRIVOX)
        .unwrap_or_else(|e| panic!("{LIBRIVOX}: {e} (apt install pocketsphinx-testdata)"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .collect();
    clips.sort();
    assert_eq!(clips.len(), 5);
    clips
}

/// Writes 16 kHz mono 16-bit PCM.
pub fn write_wav(path: &Path, samples: &[f32]) {
    let mut bytes = Vec::with_capacity(44 + samples.len() * 2);
    let data_len = (samples.len() * 2) as u32;
    bytes.extend_from_slice(b"RIFF");
    bytes.extend_from_slice(&(36 + data_len).to_le_bytes());
    bytes.extend_from_slice(b"WAVEfmt ");
    bytes.extend_from_slice(&16u32.to_le_bytes());
    bytes.extend_from_slice(&1u16.to_le_bytes());
    bytes.extend_from_slice(&1u16.to_le_bytes());
    bytes.extend_from_slice(&16_000u32.to_le_bytes());
    bytes.extend_from_slice(&32_000u32.to_le_bytes());
    bytes.extend_from_slice(&2u16.to_le_bytes());
    bytes.extend_from_slice(&16u16.to_le_bytes());
    bytes.extend_from_slice(b"data");
    bytes.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        let v = (s.clamp(-1.0, 1.0) * 32767.0).round() as i16;
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

/// `atelier` with the test models and a private state dir.
pub fn atelier_with_models(state: &Path) -> Command {
    let mut cmd = atelier();
    cmd.env("ATELIER_MODELS", test_models())
        .env("XDG_STATE_HOME", state)
        .env("ATELIER_CONFIG_DIR", state.join("config"));
    cmd
}

/// The openai checkpoint converted from the same weights as the test model.
pub fn converted_checkpoint(name: &str) -> PathBuf {
    let dir = std::env::var_os("ATELIER_TEST_CONVERTED")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".cache/converted"));
    let p = dir.join(format!("{name}.pt"));
    assert!(
        p.exists(),
        "{} is missing: run tools/dev.sh test",
        p.display()
    );
    p
}

pub fn run_python(script: &str, args: &[&std::ffi::OsStr]) {
    let out = Command::new(python())
        .current_dir(root())
        .arg(root().join(script))
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What [`run_measured`] saw of one child.
pub struct Measured {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Peak resident memory of that child alone (wait4's ru_maxrss), in KB.
    pub max_rss_kb: i64,
}

/// Runs `cmd` to its end and measures its peak RSS (wait4's rusage of exactly this child;
/// never a timing). Panics when the child was killed by a signal (an abort is a failure).
// The child is reaped by wait4 (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
pub fn run_measured(cmd: &mut Command) -> Measured {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let mut stderr = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    let stdout = reader.join().unwrap();
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value to be filled in; the pid is our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    assert!(
        libc::WIFEXITED(status),
        "atelier was killed (status {status}):\n{stderr}"
    );
    Measured {
        code: libc::WEXITSTATUS(status),
        stdout,
        stderr,
        max_rss_kb: usage.ru_maxrss,
    }
}
