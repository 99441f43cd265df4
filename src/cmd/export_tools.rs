//! Where the Python export tools (`tools/export`) and the Python that runs them are, for
//! `atelier models import` and `doctor`. Works from the source tree, from an install
//! (`tools/dev.sh install`), or with `ATELIER_TOOLS` / `ATELIER_PYTHON` set.
use crate::engine::runtime;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The export tools' Python baked in at build time (tools/dev.sh, .cargo/config.toml).
const BUILD_PYTHON: &str = env!("ATELIER_EXPORT_PYTHON");

fn has_tools(root: &Path) -> bool {
    root.join("tools/export/__main__.py").is_file()
}

/// The folder holding `tools/export`: `ATELIER_TOOLS`; else the install's `share/atelier`
/// beside this binary (PREFIX/lib/atelier/atelier or PREFIX/bin/atelier); else the source
/// tree it was built from, if it is still there.
pub fn tools_root() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("ATELIER_TOOLS").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return if has_tools(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "ATELIER_TOOLS={}: has no tools/export/__main__.py",
                dir.display()
            ))
        };
    }
    let mut tried = Vec::new();
    if let Ok(exe) = std::env::current_exe().and_then(std::fs::canonicalize) {
        for up in [1, 2] {
            if let Some(prefix) = exe.ancestors().nth(up + 1) {
                let share = prefix.join("share/atelier");
                if has_tools(&share) {
                    return Ok(share);
                }
                tried.push(share);
            }
        }
    }
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if has_tools(&source) {
        return Ok(source);
    }
    tried.push(source);
    Err(format!(
        "the export tools (tools/export) are not in {}: install with tools/dev.sh install, or set ATELIER_TOOLS",
        tried
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// A Python interpreter and the torch version it imports (None: it has no torch).
#[derive(Debug, Clone)]
pub struct Python {
    pub path: PathBuf,
    pub torch: Option<String>,
}

fn probe(path: &Path) -> Option<Python> {
    let out = Command::new(path)
        .args(["-c", "import torch; print(torch.__version__)"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let torch = out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string());
    Some(Python {
        path: path.to_path_buf(),
        torch,
    })
}

/// The places a Python for the export tools is looked for, in order: `ATELIER_PYTHON`, the
/// one the build named, the install's `share/atelier/python`, the source tree's `.venv`,
/// then `python3` on the PATH.
fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("ATELIER_PYTHON").filter(|p| !p.is_empty()) {
        out.push(PathBuf::from(p));
        return out;
    }
    if !BUILD_PYTHON.is_empty() {
        out.push(PathBuf::from(BUILD_PYTHON));
    }
    if let Ok(root) = tools_root() {
        out.push(root.join("python"));
        out.push(root.join(".venv/bin/python"));
    }
    out.push(PathBuf::from("python3"));
    out
}

/// The first Python whose torch is the series of the libtorch in use, so what it exports
/// loads here. An error lists what was found.
pub fn python() -> Result<Python, String> {
    let want = runtime::libtorch().series().to_string();
    let mut seen = Vec::new();
    for path in candidates() {
        let is_bare_name = path.components().count() == 1;
        if !is_bare_name && !path.exists() {
            continue;
        }
        let Some(py) = probe(&path) else {
            seen.push(format!("{} (does not run)", path.display()));
            continue;
        };
        match &py.torch {
            Some(v) if runtime::series(v) == want => return Ok(py),
            Some(v) => seen.push(format!("{} (torch {v})", path.display())),
            None => seen.push(format!("{} (no torch)", path.display())),
        }
    }
    Err(format!(
        "no Python with torch {want} (the libtorch atelier runs on) for the export tools; found: {}. \
         Set ATELIER_PYTHON to one, or set up with tools/dev.sh setup --torch DIR",
        if seen.is_empty() {
            "none".to_string()
        } else {
            seen.join(", ")
        }
    ))
}
