//! `atelier tag | moderate | index | search | similar | embed`: CLIP from the command line,
//! one file per command on the shared [`ClipSession`](crate::engine::clip::session).
//!
//! Bad input (corrupt, truncated, empty, unsupported or over-size images) gets one line naming
//! the file; the run goes on and exits 1 at the end.
mod embed;
mod index;
mod search;
mod tag;

pub use embed::embed;
pub use index::index;
pub use search::{search, similar};
pub use tag::{moderate, tag};

use super::fail;
use crate::cli::ClipModelArgs;
use crate::config::{DeviceChoice, Loaded};
use crate::engine::clip::index::{self as clip_index, Index};
use crate::engine::clip::session::ClipSession;
use crate::engine::{runtime, store, DeviceThread};
use crate::media::{walk, MediaKind};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn finish(failed: usize) -> ExitCode {
    if failed > 0 {
        super::exit(super::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    }
}

/// The CLIP session the flags and config.toml ask for, and the images per model call.
fn start(
    loaded: &Loaded,
    args: &ClipModelArgs,
    device: DeviceChoice,
    models_dir: &Path,
) -> Result<(ClipSession, usize), String> {
    let cfg = &loaded.config.clip;
    if let Some(n) = args.threads {
        runtime::set_threads(n);
    }
    let device = runtime::resolve_device(device).map_err(|e| e.to_string())?;
    let name = args.model.clone().unwrap_or_else(|| cfg.model.clone());
    let model = store::find(models_dir, &name, "clip").map_err(|e| e.to_string())?;
    if model.manifest.random_init {
        eprintln!(
            "warning: {}: random weights (a test model): its results mean nothing",
            model.name()
        );
    }
    let thread =
        DeviceThread::spawn(device).map_err(|e| format!("cannot start the model thread: {e}"))?;
    let session = ClipSession::start(thread, model)?;
    let batch = args.batch_size.unwrap_or(cfg.batch_size as usize).max(1);
    Ok((session, batch))
}

fn is_image(path: &Path) -> bool {
    MediaKind::of(path) == MediaKind::Image
}

/// Files as given (any extension, so bad files are reported), folders searched for images.
fn collect(inputs: &[PathBuf]) -> (Vec<PathBuf>, Vec<String>) {
    let (mut files, mut errors) = (Vec::new(), Vec::new());
    for input in inputs {
        if input.is_dir() {
            walk(input, &is_image, &mut files, &mut errors);
        } else if input.exists() {
            files.push(input.clone());
        } else {
            errors.push(format!("{}: no such file or folder", input.display()));
        }
    }
    (files, errors)
}

fn index_path(loaded: &Loaded, flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .unwrap_or_else(|| clip_index::default_path(&loaded.config.clip.index))
}

fn open_index(loaded: &Loaded, flag: Option<&Path>, model: &str) -> Result<Index, String> {
    let path = index_path(loaded, flag);
    if !path.is_file() {
        return Err(format!(
            "{}: no index yet: run `atelier index DIR…` first",
            path.display()
        ));
    }
    Index::open(&path, model).map_err(|e| e.to_string())
}
