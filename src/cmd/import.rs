//! `atelier models import [FAMILY] PATH`: what the source is (engine::store::detect), the
//! export tool run into a hidden staging folder in the store, a check of what it wrote, then
//! one rename into place. An interrupted or failed import leaves nothing in the store.
use super::export_tools;
use crate::cli::ImportArgs;
use crate::config::Loaded;
use crate::engine::store::detect::{self, Detected, Kind};
use crate::engine::store::{self, names};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

/// The stages the progress bar shows.
const STAGES: &[&str] = &["detect", "export", "check", "install"];
/// Lines of the export tool's stderr shown when it fails.
const STDERR_TAIL: usize = 20;

use super::CmdError as Failure;

fn usage(message: impl Into<String>) -> Failure {
    Failure::usage(message.into())
}

fn failed(message: impl Into<String>) -> Failure {
    Failure::failure(message.into())
}

pub fn import(loaded: &Loaded, dir: &Path, args: &ImportArgs, device: &str) -> ExitCode {
    match run(loaded, dir, args, device) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.report(),
    }
}

/// What the import does: the detection, possibly corrected by the flags.
struct Plan {
    kind: Kind,
    format: String,
    source: PathBuf,
    arch: Option<String>,
    what: String,
}

fn plan(family: Option<Kind>, source: &Path, args: &ImportArgs) -> Result<Plan, Failure> {
    let detected: Result<Detected, String> = detect::probe(source)
        .map_err(|e| format!("{}: cannot read: {e}", source.display()))
        .and_then(|p| detect::detect(&p));
    let explicit = |kind: Kind| Plan {
        kind,
        format: "auto".into(),
        source: source.to_path_buf(),
        arch: None,
        what: format!("a {} source", kind.name()),
    };
    let mut plan = match (family, detected) {
        // A family given that the files do not show: the tool is trusted with the source.
        (Some(kind), Ok(d)) if d.kind != kind => explicit(kind),
        (Some(kind), Err(_)) => explicit(kind),
        (_, Ok(d)) => Plan {
            kind: d.kind,
            format: d.format.to_string(),
            source: d.source,
            arch: d.arch,
            what: d.what,
        },
        (None, Err(e)) => return Err(failed(format!("{e}; nothing was imported"))),
    };
    if args.format != "auto" {
        plan.format = args.format.clone();
    }
    if args.arch.is_some() {
        plan.arch = args.arch.clone();
    }
    Ok(plan)
}

/// The store name a source gets: its known short name (`whisper-small`, `clip-vit-b-32`),
/// else its repo's or file's name, with the family's prefix.
fn default_name(kind: Kind, source: &Path, repo: Option<&str>) -> String {
    let row = repo.and_then(|r| {
        names::KNOWN
            .iter()
            .find(|k| k.repos.iter().any(|x| x.eq_ignore_ascii_case(r)))
    });
    if let Some(row) = row {
        let short = row.names[0].to_ascii_lowercase().replace('/', "-");
        return match kind {
            Kind::Whisper => format!("whisper-{short}"),
            Kind::Clip => format!("clip-{short}"),
            _ => repo
                .and_then(|r| r.rsplit('/').next())
                .unwrap_or(&short)
                .to_string(),
        };
    }
    let base = if source.file_name().is_some_and(|n| n == "model.bin") {
        source.parent().unwrap_or(source)
    } else {
        source
    };
    let stem = repo
        .and_then(|r| r.rsplit('/').next().map(String::from))
        .or_else(|| {
            let s = if base.is_dir() {
                base.file_name()
            } else {
                base.file_stem()
            };
            s.map(|s| s.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| kind.name().to_string());
    match kind {
        Kind::Whisper => {
            let stem = stem.strip_prefix("faster-").unwrap_or(&stem);
            if stem.starts_with("whisper") {
                stem.to_string()
            } else {
                format!("whisper-{stem}")
            }
        }
        Kind::Clip if !stem.to_lowercase().contains("clip") => format!("clip-{stem}"),
        Kind::Controlnet if !stem.to_lowercase().contains("controlnet") => {
            format!("controlnet-{stem}")
        }
        Kind::Vad => "vad-silero".to_string(),
        Kind::Speaker => crate::engine::speaker::DEFAULT_MODEL.to_string(),
        _ => stem,
    }
}

fn run(loaded: &Loaded, dir: &Path, args: &ImportArgs, device: &str) -> Result<(), Failure> {
    let (family, source) = match args.args.as_slice() {
        [source] => (None, source.clone()),
        [family, source] => {
            let text = family.to_string_lossy();
            let kind = Kind::parse(&text).ok_or_else(|| {
                usage(format!(
                    "unknown family '{text}' (whisper, clip, vad, speaker, sd, controlnet, lora; or leave it out to detect it)"
                ))
            })?;
            (Some(kind), source.clone())
        }
        _ => return Err(usage("give [FAMILY] PATH")),
    };
    if !source.exists() {
        return Err(usage(format!(
            "{}: no such file or folder",
            source.display()
        )));
    }
    if let Some(Err(problem)) = args.name.as_deref().map(store::check_name) {
        return Err(usage(format!("--name: model name {problem}")));
    }
    // The repo from the path as given: a hub snapshot's files are links into its blobs.
    let repo = names::repo_of_source(&std::path::absolute(&source).unwrap_or(source.clone()));
    let source = std::fs::canonicalize(&source).unwrap_or(source);
    let snapshot = detect::hub_snapshot(&source).map_err(failed)?;
    let bar = progress_bar();
    bar.set_message(format!("detect {}", source.display()));
    let plan = plan(family, &snapshot, args)?;
    if args.quantize.is_some() && plan.kind != Kind::Whisper {
        return Err(usage("--quantize is for Whisper models"));
    }
    bar.println(format!(
        "{}: {} ({} {})",
        source.display(),
        plan.what,
        plan.kind.name(),
        plan.format
    ));
    bar.inc(1);
    let name = match &args.name {
        Some(n) => n.clone(),
        None => default_name(plan.kind, &snapshot, repo.as_deref()),
    };
    store::check_name(&name).map_err(|p| {
        usage(format!(
            "the default name '{name}' {p}: give one with --name"
        ))
    })?;
    if plan.kind == Kind::Lora {
        return import_lora(loaded, dir, &plan, &name, &bar);
    }
    if dir.join(&name).exists() {
        return Err(failed(format!(
            "{}: a model named '{name}' is installed already (remove it first: atelier models remove {name}, or give another --name)",
            dir.join(&name).display()
        )));
    }
    let root = export_tools::tools_root().map_err(failed)?;
    let python = export_tools::python().map_err(failed)?;
    let mut cmd = Command::new(&python.path);
    cmd.current_dir(&root).args(["-m", "tools.export"]);
    let recorded = tool_args(&mut cmd, &plan, args, &name, &source, device);
    cmd.env(
        "ATELIER_IMPORT_COMMAND",
        shlex::try_join(recorded.iter().map(String::as_str)).unwrap_or_default(),
    );
    if let Some(repo) = &repo {
        cmd.env("ATELIER_SOURCE_REPO", repo);
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| failed(format!("{}: cannot create the store: {e}", dir.display())))?;
    let staging = tempfile::Builder::new()
        .prefix(".import-")
        .tempdir_in(dir)
        .map_err(|e| failed(format!("{}: cannot write here: {e}", dir.display())))?;
    cmd.arg("--models").arg(staging.path());
    bar.set_message(format!("export {name}"));
    run_tool(&mut cmd, &bar, &python.path, &source)?;
    bar.inc(1);

    bar.set_message(format!("check {name}"));
    let staged = staging.path().join(&name);
    let model = store::InstalledModel::open(&staged)
        .map_err(|e| failed(format!("the export tool wrote no usable model: {e}")))?;
    let problems = model.verify(false);
    if let Some(p) = problems.first() {
        return Err(failed(format!(
            "the exported model does not verify: {p}; nothing was imported"
        )));
    }
    bar.inc(1);

    bar.set_message(format!("install {name}"));
    let target = dir.join(&name);
    crate::output::atomic::rename_noreplace(&staged, &target).map_err(|e| {
        failed(format!(
            "{}: cannot move the model into place: {e}",
            target.display()
        ))
    })?;
    bar.inc(1);
    bar.finish_and_clear();
    let mf = &model.manifest;
    println!(
        "imported {name} ({} {}, {}/{}) into {}",
        mf.family,
        mf.variant,
        mf.device,
        mf.dtype,
        target.display()
    );
    Ok(())
}

fn progress_bar() -> ProgressBar {
    let bar =
        ProgressBar::with_draw_target(Some(STAGES.len() as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:12}] {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// The export tool's arguments for the plan; returns the command line the manifest records
/// (the re-import hint: `atelier models import FAMILY SOURCE --name NAME …`).
fn tool_args(
    cmd: &mut Command,
    plan: &Plan,
    args: &ImportArgs,
    name: &str,
    source: &Path,
    device: &str,
) -> Vec<String> {
    let mut recorded: Vec<String> = ["atelier", "models", "import", plan.kind.name()]
        .into_iter()
        .map(String::from)
        .chain([source.display().to_string(), "--name".into(), name.into()])
        .collect();
    let src = &plan.source;
    let dev = ["--device", device, "--dtype", &args.dtype];
    match plan.kind {
        Kind::Whisper => {
            cmd.arg("import-whisper")
                .arg("--source")
                .arg(src)
                .args(["--format", &plan.format, "--name", name])
                .args(dev);
            if let Some(q) = &args.quantize {
                cmd.args(["--quantize", q]);
                recorded.extend(["--quantize".into(), q.clone()]);
            }
        }
        Kind::Clip => {
            cmd.arg("import-clip")
                .arg("--source")
                .arg(src)
                .args(["--format", &plan.format, "--name", name])
                .args(dev);
            if let Some(arch) = &plan.arch {
                cmd.args(["--arch", arch]);
                recorded.extend(["--arch".into(), arch.clone()]);
            }
        }
        Kind::Vad => {
            cmd.arg("export-vad")
                .arg("--wheel")
                .arg(src)
                .arg("--cache")
                .arg(std::env::temp_dir().join("atelier-export"))
                .args(["--name", name]);
        }
        Kind::Speaker => {
            cmd.arg("export-speaker")
                .arg("--wheel")
                .arg(src)
                .arg("--cache")
                .arg(std::env::temp_dir().join("atelier-export"))
                .args(["--name", name]);
        }
        Kind::Sd => {
            cmd.arg("import-sd")
                .arg(src)
                .args(["--name", name])
                .args(dev);
            if let Some(arch) = &plan.arch {
                cmd.args(["--config", arch]);
                recorded.extend(["--arch".into(), arch.clone()]);
            }
        }
        Kind::Controlnet => {
            cmd.arg("import-controlnet")
                .arg(src)
                .args(["--name", name])
                .args(dev);
        }
        Kind::Lora => {}
    }
    if args.format != "auto" {
        recorded.extend(["--format".into(), args.format.clone()]);
    }
    recorded
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Runs the export tool, its output lines as the bar's message; on Ctrl-C or SIGTERM the tool
/// is stopped and the staging folder goes with the caller's `TempDir`.
fn run_tool(
    cmd: &mut Command,
    bar: &ProgressBar,
    python: &Path,
    source: &Path,
) -> Result<(), Failure> {
    // A handler, not SIG_IGN: the child gets the default action back at exec.
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    cmd.env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        failed(format!(
            "cannot run the export tool with {}: {e} (run tools/dev.sh setup, or set ATELIER_PYTHON)",
            python.display()
        ))
    })?;
    let hidden = bar.is_hidden();
    let out = child.stdout.take().map(|out| {
        let bar = bar.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                tracing::info!(target: "import", "{line}");
                if hidden {
                    eprintln!("{line}");
                } else {
                    bar.set_message(format!("export: {}", line.trim()));
                }
            }
        })
    });
    let err = child.stderr.take().map(|err| {
        std::thread::spawn(move || {
            std::io::BufReader::new(err)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        })
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) if INTERRUPTED.load(Ordering::SeqCst) => {
                let _ = child.kill();
                let _ = child.wait();
                break Err("interrupted");
            }
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(100)),
            Err(_) => break Err("lost the export tool"),
        }
    };
    if let Some(t) = out {
        let _ = t.join();
    }
    let stderr = err.and_then(|t| t.join().ok()).unwrap_or_default();
    bar.finish_and_clear();
    match status {
        Ok(s) if s.success() && !INTERRUPTED.load(Ordering::SeqCst) => Ok(()),
        Ok(s) if !INTERRUPTED.load(Ordering::SeqCst) => {
            let tail = &stderr[stderr.len().saturating_sub(STDERR_TAIL)..];
            for line in tail {
                eprintln!("{line}");
            }
            // The tool's own one-line error, when it gave one.
            let reason = stderr
                .iter()
                .rev()
                .find_map(|l| l.strip_prefix("error: "))
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            Err(failed(format!(
                "the export tool failed ({s}) importing {}{reason}; nothing was imported",
                source.display()
            )))
        }
        _ => Err(failed(format!(
            "import of {} interrupted; nothing was imported",
            source.display()
        ))),
    }
}

/// A LoRA is used as it is: its keys are checked, then it is copied (temp file + rename) into
/// the LoRA folder as NAME.safetensors.
fn import_lora(
    loaded: &Loaded,
    dir: &Path,
    plan: &Plan,
    name: &str,
    bar: &ProgressBar,
) -> Result<(), Failure> {
    let tensors = detect::safetensors_header(&plan.source).ok_or_else(|| {
        failed(format!(
            "{}: not a safetensors file (a LoRA is imported from .safetensors)",
            plan.source.display()
        ))
    })?;
    detect::check_lora(&tensors).map_err(|p| {
        failed(format!(
            "{}: not a usable LoRA: {p}; nothing was imported",
            plan.source.display()
        ))
    })?;
    bar.inc(1);
    let lora_dir = crate::engine::diffusion::inputs::lora_dir(
        &crate::config::expand_home(&loaded.config.diffusion.lora_dir).to_string_lossy(),
        dir,
    );
    let target = lora_dir.join(format!("{name}.safetensors"));
    if target.exists() {
        return Err(failed(format!(
            "{}: a LoRA named '{name}' exists already (give another --name)",
            target.display()
        )));
    }
    std::fs::create_dir_all(&lora_dir)
        .map_err(|e| failed(format!("{}: cannot create: {e}", lora_dir.display())))?;
    let io = |e: std::io::Error| failed(format!("{}: cannot write: {e}", target.display()));
    let tmp = tempfile::Builder::new()
        .prefix(".import-")
        .tempfile_in(&lora_dir)
        .map_err(io)?;
    std::fs::copy(&plan.source, tmp.path()).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    bar.inc(2);
    let (_, tmp_path) = tmp.keep().map_err(|e| io(e.error))?;
    if let Err(e) = crate::output::atomic::rename_noreplace(&tmp_path, &target) {
        let _ = std::fs::remove_file(&tmp_path);
        return Err(io(e));
    }
    bar.inc(1);
    bar.finish_and_clear();
    println!(
        "imported LoRA {name} ({} keys, {}) into {}",
        tensors.len(),
        plan.format,
        target.display()
    );
    Ok(())
}
