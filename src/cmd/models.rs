use super::export_tools;
use crate::cli::{ImportArgs, ImportFamily};
use crate::engine::store;
use std::path::Path;
use std::process::{Command, ExitCode};

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

pub fn verify(dir: &Path, names: &[String]) -> ExitCode {
    let models = store::list(dir);
    let mut failures = 0;
    let mut seen = 0;
    let mut verified: Vec<String> = Vec::new();
    for model in models {
        let m = match model {
            Ok(m) => m,
            Err(e) => {
                if names.is_empty() {
                    failures += 1;
                    println!("FAIL  {e}");
                }
                continue;
            }
        };
        if !names.is_empty() && !names.iter().any(|n| n == m.name()) {
            continue;
        }
        seen += 1;
        verified.push(m.name().to_string());
        let problems = m.verify(true);
        if problems.is_empty() {
            println!("ok    {} ({} files)", m.name(), m.manifest.files.len());
        } else {
            failures += 1;
            println!("FAIL  {}", m.name());
            for p in problems {
                println!("      {p}");
            }
        }
    }
    for name in names {
        if !verified.contains(name) {
            failures += 1;
            println!("FAIL  {name}: not installed in {}", dir.display());
        }
    }
    if seen == 0 && names.is_empty() && failures == 0 {
        println!("no models installed in {}", dir.display());
    }
    if failures > 0 {
        super::exit(super::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    }
}

pub fn import(dir: &Path, args: &ImportArgs, device: &str) -> ExitCode {
    if !args.source.exists() {
        eprintln!("error: {}: no such file or folder", args.source.display());
        return super::exit(super::EXIT_USAGE);
    }
    if let Some(Err(problem)) = args.name.as_deref().map(store::check_name) {
        eprintln!("error: --name: model name {problem}");
        return super::exit(super::EXIT_USAGE);
    }
    if args.quantize.is_some() && !matches!(args.family, ImportFamily::Whisper) {
        eprintln!("error: --quantize is for Whisper models");
        return super::exit(super::EXIT_USAGE);
    }
    let source = std::fs::canonicalize(&args.source).unwrap_or_else(|_| args.source.clone());
    let (root, python) =
        match export_tools::tools_root().and_then(|r| Ok((r, export_tools::python()?))) {
            Ok(found) => found,
            Err(e) => {
                eprintln!("error: {e}");
                return super::exit(super::EXIT_FAILURE);
            }
        };
    let mut cmd = Command::new(&python.path);
    cmd.current_dir(&root).args(["-m", "tools.export"]);
    // What the manifest records as the command that made it (the re-import hint).
    let family = match args.family {
        ImportFamily::Whisper => "whisper",
        ImportFamily::Clip => "clip",
        ImportFamily::Vad => "vad",
        ImportFamily::Speaker => "speaker",
    };
    let mut recorded: Vec<String> = ["atelier", "models", "import", family]
        .into_iter()
        .map(String::from)
        .chain([source.display().to_string()])
        .collect();
    match args.family {
        ImportFamily::Whisper => {
            let name = args.name.clone().unwrap_or_else(|| default_name(&source));
            recorded.extend(["--name".into(), name.clone()]);
            if let Some(q) = &args.quantize {
                recorded.extend(["--quantize".into(), q.clone()]);
            }
            cmd.arg("import-whisper")
                .arg("--source")
                .arg(&source)
                .args([
                    "--format",
                    &args.format,
                    "--dtype",
                    &args.dtype,
                    "--device",
                    device,
                ])
                .args(["--name", &name]);
            if let Some(q) = &args.quantize {
                cmd.args(["--quantize", q]);
            }
        }
        ImportFamily::Clip => {
            let name = args.name.clone().unwrap_or_else(|| {
                let stem = source
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "model".into());
                if stem.to_lowercase().contains("clip") {
                    stem
                } else {
                    format!("clip-{stem}")
                }
            });
            recorded.extend(["--name".into(), name.clone()]);
            cmd.arg("import-clip").arg("--source").arg(&source).args([
                "--format",
                &args.format,
                "--device",
                device,
                "--dtype",
                &args.dtype,
                "--name",
                &name,
            ]);
            if let Some(arch) = &args.arch {
                cmd.args(["--arch", arch]);
                recorded.extend(["--arch".into(), arch.clone()]);
            }
        }
        ImportFamily::Vad => {
            cmd.arg("export-vad")
                .arg("--wheel")
                .arg(&source)
                .arg("--cache")
                .arg(std::env::temp_dir().join("atelier-export"));
            if let Some(name) = &args.name {
                cmd.args(["--name", name]);
                recorded.extend(["--name".into(), name.clone()]);
            }
        }
        ImportFamily::Speaker => {
            cmd.arg("export-speaker")
                .arg("--wheel")
                .arg(&source)
                .arg("--cache")
                .arg(std::env::temp_dir().join("atelier-export"));
            if let Some(name) = &args.name {
                cmd.args(["--name", name]);
                recorded.extend(["--name".into(), name.clone()]);
            }
        }
    }
    if args.format != "auto" {
        recorded.extend(["--format".into(), args.format.clone()]);
    }
    cmd.env(
        "ATELIER_IMPORT_COMMAND",
        shlex::try_join(recorded.iter().map(String::as_str)).unwrap_or_default(),
    );
    cmd.arg("--models").arg(dir);
    match cmd.status() {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!(
                "error: the export tool failed ({s}) importing {}",
                args.source.display()
            );
            super::exit(super::EXIT_FAILURE)
        }
        Err(e) => {
            eprintln!(
                "error: cannot run the export tool with {}: {e} (run tools/dev.sh setup, or set ATELIER_PYTHON)",
                python.path.display()
            );
            super::exit(super::EXIT_FAILURE)
        }
    }
}

/// A store name from a source path: `~/m/faster-whisper-small` → `whisper-small`.
fn default_name(source: &Path) -> String {
    let base = if source.is_file() && source.file_name().is_some_and(|n| n == "model.bin") {
        source.parent().unwrap_or(source)
    } else {
        source
    };
    let stem = base
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "whisper".into());
    let stem = stem.strip_prefix("faster-").unwrap_or(&stem).to_string();
    if stem.starts_with("whisper") {
        stem
    } else {
        format!("whisper-{stem}")
    }
}
