//! The layer rules of docs/architecture.md, checked on the source text: `state/`, `ui/` and
//! `config/` name neither `engine/`, `jobs/`, `app/` nor tch, and `domain/` names nothing
//! else in the crate.
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Every `path:line: text` under `src/DIR` whose code (comments dropped) holds one of `banned`.
fn offences(dir: &str, banned: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(!files.is_empty(), "no sources under {}", root.display());
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            // `use crate::{engine::x, ...}` and `use crate::{jobs, ...}` as well as paths.
            let squeezed: String = code.chars().filter(|c| !c.is_whitespace()).collect();
            if banned.iter().any(|b| squeezed.contains(b)) {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    found
}

/// What the pure layers must not name: the engine, the queue, the TUI runtime and tch, by any
/// path (`crate::`, `atelier::`, `super::` from a top module file, or inside a `use crate::{…}`).
const OUTER: &[&str] = &[
    "crate::engine",
    "crate::jobs",
    "crate::app",
    "atelier::engine",
    "atelier::jobs",
    "atelier::app",
    "super::engine",
    "super::jobs",
    "super::app",
    "{engine",
    ",engine::",
    "{jobs",
    ",jobs::",
    "{app::",
    ",app::",
    "tch::",
    "usetch",
    "externcratetch",
];

#[test]
fn state_names_no_engine_jobs_app_or_tch() {
    let found = offences("state", OUTER);
    assert!(
        found.is_empty(),
        "state/ reaches out:\n{}",
        found.join("\n")
    );
}

#[test]
fn ui_names_no_engine_jobs_app_or_tch() {
    let found = offences("ui", OUTER);
    assert!(found.is_empty(), "ui/ reaches out:\n{}", found.join("\n"));
}

#[test]
fn config_names_no_engine_jobs_app_or_tch() {
    let found = offences("config", OUTER);
    assert!(
        found.is_empty(),
        "config/ reaches out:\n{}",
        found.join("\n")
    );
}

#[test]
fn domain_depends_on_nothing_else_in_the_crate() {
    let mut banned: Vec<&str> = OUTER.to_vec();
    banned.extend([
        "crate::state",
        "crate::ui",
        "crate::config",
        "crate::media",
        "crate::output",
        "crate::watch",
        "crate::cmd",
        "crate::transcript",
    ]);
    let found = offences("domain", &banned);
    assert!(
        found.is_empty(),
        "domain/ depends on:\n{}",
        found.join("\n")
    );
}
