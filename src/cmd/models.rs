use crate::cli::{ImportArgs, ImportFamily};
use crate::engine::store;
use std::path::{Path, PathBuf};
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

/// The repository that holds tools/export (ATELIER_TOOLS, else where this binary was built).
pub fn tools_root() -> PathBuf {
    std::env::var_os("ATELIER_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The Python that runs the export tools: ATELIER_PYTHON, else the project venv.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("ATELIER_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = tools_root().join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

pub fn import(dir: &Path, args: &ImportArgs, device: &str) -> ExitCode {
    if !args.source.exists() {
        eprintln!("error: {}: no such file or folder", args.source.display());
        return super::exit(super::EXIT_USAGE);
    }
    if args.quantize.is_some() && !matches!(args.family, ImportFamily::Whisper) {
        eprintln!("error: --quantize is for Whisper models");
        return super::exit(super::EXIT_USAGE);
    }
    let source = std::fs::canonicalize(&args.source).unwrap_or_else(|_| args.source.clone());
    let mut cmd = Command::new(python());
    cmd.current_dir(tools_root()).args(["-m", "tools.export"]);
    match args.family {
        ImportFamily::Whisper => {
            let name = args.name.clone().unwrap_or_else(|| default_name(&source));
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
            cmd.arg("import-clip").arg("--source").arg(&source).args([
                "--format",
                &args.format,
                "--device",
                device,
                "--name",
                &name,
            ]);
            if let Some(arch) = &args.arch {
                cmd.args(["--arch", arch]);
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
            }
        }
    }
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
                python().display()
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
