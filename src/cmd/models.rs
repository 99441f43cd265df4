use crate::engine::store;
use std::path::Path;
use std::process::ExitCode;

pub fn list(dir: &Path, json: bool) -> ExitCode {
    let models = store::list(dir);
    if !json {
        println!("models in {}", dir.display());
        if models.is_empty() {
            println!("  none installed");
        }
    }
    let mut bad = false;
    for model in models {
        match model {
            Ok(m) => {
                let mf = &m.manifest;
                if json {
                    let value = serde_json::json!({
                        "name": mf.name, "family": mf.family, "variant": mf.variant,
                        "device": mf.device, "dtype": mf.dtype, "random_init": mf.random_init,
                        "source": mf.source, "dir": m.dir,
                    });
                    println!("{value}");
                } else {
                    let tag = if mf.random_init {
                        "  RANDOM WEIGHTS (tests only)"
                    } else {
                        ""
                    };
                    println!(
                        "  {:<24} {:<8} {:<12} {}/{}  {}{tag}",
                        mf.name, mf.family, mf.variant, mf.device, mf.dtype, mf.source
                    );
                }
            }
            Err(e) => {
                bad = true;
                eprintln!("error: {e}");
            }
        }
    }
    if bad {
        super::exit(super::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    }
}

pub fn verify(dir: &Path, names: &[String], json: bool) -> ExitCode {
    let models = store::list(dir);
    let mut failures = 0;
    let mut seen = 0;
    let mut verified: Vec<String> = Vec::new();
    let report = |name: &str, ok: bool, files: usize, problems: &[String]| {
        if json {
            let value = serde_json::json!({
                "name": name, "ok": ok, "files": files, "problems": problems,
            });
            println!("{value}");
        } else if ok {
            println!("ok    {name} ({files} files)");
        } else {
            println!("FAIL  {name}");
            for p in problems {
                println!("      {p}");
            }
        }
    };
    // Names users type (tiny.en, openai/whisper-base) to the installed names.
    let mut wanted: Vec<(String, Option<String>)> = Vec::new();
    for name in names {
        let resolved = store::find_any(dir, name).ok().map(|m| m.manifest.name);
        wanted.push((name.clone(), resolved));
    }
    for model in models {
        let m = match model {
            Ok(m) => m,
            Err(e) => {
                if names.is_empty() {
                    failures += 1;
                    if json {
                        let value = serde_json::json!({
                            "name": null, "ok": false, "files": 0, "problems": [e.to_string()],
                        });
                        println!("{value}");
                    } else {
                        println!("FAIL  {e}");
                    }
                }
                continue;
            }
        };
        if !names.is_empty() && !wanted.iter().any(|(_, r)| r.as_deref() == Some(m.name())) {
            continue;
        }
        seen += 1;
        verified.push(m.name().to_string());
        let problems: Vec<String> = m.verify(true).iter().map(|p| p.to_string()).collect();
        if !problems.is_empty() {
            failures += 1;
        }
        report(
            m.name(),
            problems.is_empty(),
            m.manifest.files.len(),
            &problems,
        );
    }
    for (name, resolved) in &wanted {
        if resolved.as_ref().is_none_or(|r| !verified.contains(r)) {
            failures += 1;
            report(
                name,
                false,
                0,
                &[format!("not installed in {}", dir.display())],
            );
        }
    }
    if seen == 0 && names.is_empty() && failures == 0 && !json {
        println!("no models installed in {}", dir.display());
    }
    if failures > 0 {
        super::exit(super::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    }
}

/// `atelier models info NAME`: the manifest, and each file's size and hash.
pub fn info(dir: &Path, name: &str, json: bool) -> ExitCode {
    let model = match store::find_any(dir, name) {
        Ok(m) => m,
        Err(e) => {
            return super::fail(e);
        }
    };
    let mf = &model.manifest;
    let mut files = Vec::new();
    let mut total = 0u64;
    for (role, entry) in &mf.files {
        let path = model.dir.join(&entry.path);
        let size = std::fs::metadata(&path).map(|m| m.len()).ok();
        total += size.unwrap_or(0);
        files.push(serde_json::json!({
            "role": role, "path": entry.path, "kind": entry.kind, "sha256": entry.sha256,
            "size": size,
        }));
    }
    let names = store::names::names_of(&model);
    let value = serde_json::json!({
        "name": mf.name, "family": mf.family, "variant": mf.variant, "dir": model.dir,
        "device": mf.device, "dtype": mf.dtype, "random_init": mf.random_init,
        "source": mf.source, "source_repo": mf.source_repo, "exported_with": mf.exported_with,
        "created": mf.created, "import_command": mf.import_command, "format": mf.format,
        "size": total, "files": files, "dims": mf.dims, "aliases": names,
    });
    if json {
        println!("{value}");
        return ExitCode::SUCCESS;
    }
    println!("{} ({} {})", mf.name, mf.family, mf.variant);
    println!("  folder        {}", model.dir.display());
    println!("  device/dtype  {}/{}", mf.device, mf.dtype);
    println!("  exported with {} on {}", mf.exported_with, mf.created);
    println!("  source        {}", mf.source);
    if !mf.source_repo.is_empty() {
        println!("  source repo   {}", mf.source_repo);
    }
    if !mf.import_command.is_empty() {
        println!("  import        {}", mf.import_command);
    }
    if mf.random_init {
        println!("  RANDOM WEIGHTS (tests only)");
    }
    println!("  answers to    {}", names.join(", "));
    println!("  files         {} ({})", mf.files.len(), human_size(total));
    for (role, entry) in &mf.files {
        let size = std::fs::metadata(model.dir.join(&entry.path))
            .map(|m| human_size(m.len()))
            .unwrap_or_else(|_| "MISSING".into());
        println!(
            "    {role:<14} {:<28} {size:>10}  sha256 {}",
            entry.path, entry.sha256
        );
    }
    ExitCode::SUCCESS
}

fn human_size(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

/// `atelier models remove NAME`: the folder is first renamed out of the store (one atomic
/// step: the model is gone, or still whole), then deleted.
pub fn remove(dir: &Path, name: &str, json: bool) -> ExitCode {
    let model = match store::find_any(dir, name) {
        Ok(m) if m.manifest.name == name || m.dir.file_name().is_some_and(|f| f == name) => m,
        Ok(m) => {
            eprintln!(
                "error: '{name}' is another name of '{}': give its store name to remove it",
                m.manifest.name
            );
            return super::exit(super::EXIT_USAGE);
        }
        Err(e) => {
            return super::fail(e);
        }
    };
    let trash = match tempfile::Builder::new()
        .prefix(".removing-")
        .tempdir_in(dir)
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {}: cannot remove a model here: {e}", dir.display());
            return super::exit(super::EXIT_FAILURE);
        }
    };
    let gone = trash.path().join("model");
    if let Err(e) = std::fs::rename(&model.dir, &gone) {
        eprintln!("error: {}: cannot remove: {e}", model.dir.display());
        return super::exit(super::EXIT_FAILURE);
    }
    // Dropping `trash` deletes the folder; a failure there leaves only a hidden folder.
    if let Err(e) = trash.close() {
        eprintln!("warning: removed from the store, but deleting its files failed: {e}");
    }
    if json {
        let value = serde_json::json!({
            "removed": model.manifest.name, "family": model.manifest.family, "dir": model.dir,
        });
        println!("{value}");
    } else {
        println!("removed {} ({})", model.manifest.name, model.dir.display());
    }
    ExitCode::SUCCESS
}

pub use super::import::import;
