//! `atelier tag` and `atelier moderate`: zero-shot scores of each image over a label set.
use super::{collect, fail, finish, start};
use crate::cli::{ClipModelArgs, ModerateArgs, TagArgs};
use crate::config::{DeviceChoice, Loaded};
use crate::engine::clip::zero_shot::{self, LabelSet};
use crate::output::registry::OutputRegistry;
use crate::output::sidecar;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn label_set_for(args: &TagArgs) -> Result<LabelSet, String> {
    if !args.label.is_empty() {
        let table =
            zero_shot::templates(zero_shot::user_dir().as_deref()).map_err(|e| e.to_string())?;
        let templates = table
            .get(&args.templates)
            .cloned()
            .ok_or_else(|| format!("--templates: unknown template set '{}'", args.templates))?;
        return Ok(zero_shot::ad_hoc(&args.label, templates));
    }
    let name = args.labels.as_deref().unwrap_or("general");
    zero_shot::load_label_set(name, zero_shot::user_dir().as_deref()).map_err(|e| e.to_string())
}

/// Scores every image against `set`, calling `each(path, scores)`; `each` returns false when
/// it failed (it printed why). Returns the exit code.
fn classify(
    loaded: &Loaded,
    clip: &ClipModelArgs,
    device: DeviceChoice,
    models_dir: &Path,
    set: &LabelSet,
    inputs: &[PathBuf],
    mut each: impl FnMut(&Path, Vec<f64>) -> bool,
) -> ExitCode {
    let (files, errors) = collect(inputs);
    let (session, batch) = match start(loaded, clip, device, models_dir) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    if !session.labels_ready(set) {
        let prompts: usize = set.prompts().iter().map(Vec::len).sum();
        eprintln!(
            "embedding label set '{}': {} labels, {prompts} prompts (once: the result is cached)",
            set.name,
            set.labels.len()
        );
    }
    let labels = match session.labels(set) {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let mut failed = errors.len();
    for e in errors {
        eprintln!("error: {e}");
    }
    for (path, result) in files.iter().zip(session.embed_all(&files, batch)) {
        match result {
            Ok(emb) => {
                let scores = session.scores(&emb, &labels);
                if !each(path, scores) {
                    failed += 1;
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
            }
        }
    }
    finish(failed)
}

pub fn tag(loaded: &Loaded, args: TagArgs, device: DeviceChoice, models_dir: &Path) -> ExitCode {
    let set = match label_set_for(&args) {
        Ok(s) => s,
        Err(e) => {
            return crate::cmd::usage(e);
        }
    };
    let registry = args
        .write_sidecar
        .then(OutputRegistry::open_default)
        .flatten();
    classify(
        loaded,
        &args.clip,
        device,
        models_dir,
        &set,
        &args.inputs,
        |path, scores| {
            let top = zero_shot::top_k(&scores, args.top_k, args.threshold);
            let tags: Vec<sidecar::Tag> = top
                .iter()
                .map(|(i, s)| sidecar::Tag::scored(&set.labels[*i].name, *s))
                .collect();
            let record = sidecar::record(path, &tags);
            if args.json {
                println!("{record}");
            } else {
                let text: Vec<String> = top
                    .iter()
                    .map(|(i, s)| format!("{} ({s:.3})", set.labels[*i].name))
                    .collect();
                println!("{}: {}", path.display(), text.join(", "));
            }
            if args.write_sidecar {
                match sidecar::write(registry.as_ref(), path, &tags) {
                    Ok(written) => {
                        let (want_json, want_txt) = sidecar::paths(path);
                        for (got, want) in [(&written.0, want_json), (&written.1, want_txt)] {
                            if *got != want {
                                eprintln!(
                                    "note: {} is not Atelier's: kept; wrote {}",
                                    want.display(),
                                    got.display()
                                );
                            }
                        }
                    }
                    Err(e) => {
                        eprintln!("error: cannot write the sidecar: {e}");
                        return false;
                    }
                }
            }
            true
        },
    )
}

pub fn moderate(
    loaded: &Loaded,
    args: ModerateArgs,
    device: DeviceChoice,
    models_dir: &Path,
) -> ExitCode {
    let set = match zero_shot::load_label_set(&args.labels, zero_shot::user_dir().as_deref()) {
        Ok(s) => s,
        Err(e) => {
            return crate::cmd::usage(e);
        }
    };
    if set.labels.iter().all(|l| l.threshold.is_none()) {
        eprintln!(
            "error: label set '{}' has no label with a threshold (no safety category)",
            set.name
        );
        return crate::cmd::exit(crate::cmd::EXIT_USAGE);
    }
    classify(
        loaded,
        &args.clip,
        device,
        models_dir,
        &set,
        &args.inputs,
        |path, scores| {
            let categories: Vec<(String, f64, f64)> = set
                .labels
                .iter()
                .zip(&scores)
                .filter_map(|(l, s)| l.threshold.map(|t| (l.name.clone(), *s, t)))
                .collect();
            let flagged: Vec<&(String, f64, f64)> =
                categories.iter().filter(|(_, s, t)| s >= t).collect();
            if args.json {
                let cats: Vec<serde_json::Value> = categories
                .iter()
                .map(|(n, s, t)| json!({"category": n, "score": s, "threshold": t, "flagged": s >= t}))
                .collect();
                println!(
                    "{}",
                    json!({"path": path, "flagged": !flagged.is_empty(), "categories": cats})
                );
            } else if flagged.is_empty() {
                println!("{}: ok", path.display());
            } else {
                let text: Vec<String> = flagged
                    .iter()
                    .map(|(n, s, t)| format!("{n} ({s:.3} ≥ {t})"))
                    .collect();
                println!("{}: FLAGGED {}", path.display(), text.join(", "));
            }
            true
        },
    )
}
