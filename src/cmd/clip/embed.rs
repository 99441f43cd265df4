//! `atelier embed`: raw embeddings of images and texts, as JSON.
use super::{fail, finish, start};
use crate::cli::EmbedArgs;
use crate::config::{DeviceChoice, Loaded};
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;

pub fn embed(
    loaded: &Loaded,
    args: EmbedArgs,
    device: DeviceChoice,
    models_dir: &Path,
) -> ExitCode {
    let (session, batch) = match start(loaded, &args.clip, device, models_dir) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let mut failed = 0;
    let mut images = Vec::new();
    for (path, r) in args.files.iter().zip(session.embed_all(&args.files, batch)) {
        match r {
            Ok(e) => images.push(json!({"path": path, "embedding": e})),
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
            }
        }
    }
    let texts = match session.texts(args.text.clone()) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let texts: Vec<serde_json::Value> = args
        .text
        .iter()
        .zip(texts)
        .map(|(t, e)| json!({"text": t, "embedding": e}))
        .collect();
    println!(
        "{}",
        json!({"model": session.model().name(), "logit_scale": session.logit_scale(), "images": images, "texts": texts})
    );
    finish(failed)
}
