//! `atelier index DIR…`: the persistent image index, updated incrementally.
use super::{collect, fail, finish, index_path, start};
use crate::cli::IndexArgs;
use crate::config::{DeviceChoice, Loaded};
use crate::engine::clip::index::{self, FileKey, Index, Status};
use serde_json::json;
use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub fn index(
    loaded: &Loaded,
    args: IndexArgs,
    device: DeviceChoice,
    models_dir: &Path,
) -> ExitCode {
    let (session, batch) = match start(loaded, &args.clip, device, models_dir) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let db_path = index_path(loaded, args.index.as_deref());
    let mut db = match Index::open(&db_path, session.model().name()) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let (files, errors) = collect(&args.dirs);
    let mut failed = errors.len();
    for e in errors {
        eprintln!("error: {e}");
    }
    let (mut unchanged, mut new, mut updated, mut pruned) = (0usize, 0usize, 0usize, 0usize);
    let mut seen = HashSet::new();
    let mut todo: Vec<(PathBuf, FileKey, String, Status)> = Vec::new();
    for path in &files {
        let key = match index::file_key(path) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                failed += 1;
                continue;
            }
        };
        seen.insert(key.path.clone());
        match db.status(&key, path) {
            Ok((Status::Unchanged, _)) => unchanged += 1,
            Ok((status, Some(hash))) => todo.push((path.clone(), key, hash, status)),
            Ok((_, None)) => unchanged += 1,
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
            }
        }
    }
    for dir in args.dirs.iter().filter(|d| d.is_dir()) {
        let Ok(abs) = std::fs::canonicalize(dir) else {
            continue;
        };
        match db.prune(&abs.to_string_lossy(), &seen) {
            Ok(n) => pruned += n,
            Err(e) => return fail(e),
        }
    }
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(todo.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "indexing [{bar:30}] {pos}/{len} {per_sec} {elapsed}<{eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let paths: Vec<PathBuf> = todo.iter().map(|t| t.0.clone()).collect();
    let mut rows: Vec<(FileKey, String, Vec<f32>)> = Vec::new();
    let mut db_error = None;
    session.embed_images(&paths, batch, |i, r| {
        if let Some(b) = &bar {
            b.inc(1);
        }
        match r {
            Ok(emb) => {
                let (_, key, hash, status) = &todo[i];
                rows.push((key.clone(), hash.clone(), emb));
                match status {
                    Status::New => new += 1,
                    _ => updated += 1,
                }
            }
            Err(e) => {
                let line = format!("error: {e}");
                match &bar {
                    Some(b) => b.println(line),
                    None => eprintln!("{line}"),
                }
                failed += 1;
            }
        }
        if rows.len() >= batch && db_error.is_none() {
            if let Err(e) = db.put_batch(&std::mem::take(&mut rows)) {
                db_error = Some(e);
            }
        }
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    if db_error.is_none() && !rows.is_empty() {
        db_error = db.put_batch(&rows).err();
    }
    if let Some(e) = db_error {
        return fail(e);
    }
    if args.json {
        println!(
            "{}",
            json!({
                "model": session.model().name(), "index": db_path, "new": new,
                "updated": updated, "unchanged": unchanged, "pruned": pruned, "failed": failed,
            })
        );
    } else {
        eprintln!(
            "indexed {}: {new} new, {updated} updated, {unchanged} unchanged, {pruned} pruned, {failed} failed ({})",
            session.model().name(),
            db_path.display()
        );
    }
    finish(failed)
}
