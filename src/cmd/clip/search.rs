//! `atelier search QUERY` and `atelier similar IMAGE`: nearest images in the index.
use super::{fail, open_index, start};
use crate::cli::{IndexQueryArgs, SearchArgs, SimilarArgs};
use crate::config::{DeviceChoice, Loaded};
use crate::engine::clip::index::{self, Index, Status};
use crate::engine::clip::query::{self, TermKind};
use crate::engine::clip::session::ClipSession;
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;

fn print_hits(hits: &[(String, f32)], json_out: bool) {
    for (path, score) in hits {
        if json_out {
            println!("{}", json!({"path": path, "score": score}));
        } else {
            println!("{score:.4}  {path}");
        }
    }
}

/// The model session and its index, as `search` and `similar` need them.
fn session_and_index(
    loaded: &Loaded,
    args: &IndexQueryArgs,
    device: DeviceChoice,
    models_dir: &Path,
) -> Result<(ClipSession, Index), String> {
    let (session, _) = start(loaded, &args.clip, device, models_dir)?;
    let db = open_index(loaded, args.index.as_deref(), session.model().name())?;
    Ok((session, db))
}

pub fn search(
    loaded: &Loaded,
    args: SearchArgs,
    device: DeviceChoice,
    models_dir: &Path,
) -> ExitCode {
    let (session, db) = match session_and_index(loaded, &args.results, device, models_dir) {
        Ok(pair) => pair,
        Err(e) => return fail(e),
    };
    let terms = match query::parse(&args.query) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: query: {e}");
            return crate::cmd::exit(crate::cmd::EXIT_USAGE);
        }
    };
    let mut parts = Vec::with_capacity(terms.len());
    for term in terms {
        let embedding = match &term.kind {
            TermKind::Text(text) => session.text(text),
            TermKind::Image(path) => session.embed_image(path),
        };
        match embedding {
            Ok(e) => parts.push((term.weight, e)),
            Err(e) => return fail(e),
        }
    }
    // A plain query is used as the model gave it; arithmetic combines normalised terms.
    let query = match parts.as_slice() {
        [(w, e)] if *w == 1.0 => e.clone(),
        _ => query::combine(&parts),
    };
    match db.search(&query, args.results.top) {
        Ok(hits) => {
            print_hits(&hits, args.results.json);
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

pub fn similar(
    loaded: &Loaded,
    args: SimilarArgs,
    device: DeviceChoice,
    models_dir: &Path,
) -> ExitCode {
    let (session, db) = match session_and_index(loaded, &args.results, device, models_dir) {
        Ok(pair) => pair,
        Err(e) => return fail(e),
    };
    let key = match index::file_key(&args.image) {
        Ok(k) => k,
        Err(e) => return fail(format!("{}: {e}", args.image.display())),
    };
    // An indexed, unchanged image is not embedded again.
    let stored = match db.status(&key, &args.image) {
        Ok((Status::Unchanged, _)) => db.get(&key.path).ok().flatten(),
        _ => None,
    };
    let query = match stored {
        Some(q) => q,
        None => match session.embed_image(&args.image) {
            Ok(q) => q,
            Err(e) => return fail(e),
        },
    };
    match db.search(&query, args.results.top + 1) {
        Ok(hits) => {
            let hits: Vec<(String, f32)> = hits
                .into_iter()
                .filter(|(p, _)| *p != key.path)
                .take(args.results.top)
                .collect();
            print_hits(&hits, args.results.json);
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
