//! The runners of the job kinds, and the one place they are built (`atelier watch` and the
//! TUI). A kind without a runner in [`crate::jobs::Runners`] fails its jobs with "not
//! available in this build".
mod checksum;
mod clip;
mod generate;
mod whisper;

pub use checksum::ChecksumRunner;
pub use clip::ClipRunner;
pub use generate::GenerateRunner;
pub use whisper::WhisperRunner;

use crate::config::Config;
use crate::engine::DeviceThread;
use crate::jobs::{JobKind, Runner, Runners};
use std::path::Path;
use std::sync::Arc;

/// The runner of each kind in `kinds` (and checksum, always), all sharing `thread`. Nothing
/// is loaded here: a runner loads the model a job names on its first job and keeps it warm
/// (call [`Runner::preload`] to load one now).
pub fn build(
    config: &Config,
    kinds: &[JobKind],
    thread: &DeviceThread,
    models_dir: &Path,
) -> Runners {
    build_diarizing(config, kinds, thread, models_dir, false)
}

/// [`build`]; with `diarize` (some rule diarizes), the transcribe runner's
/// [`Runner::preload`] loads the speaker encoder with the Whisper model, once.
pub fn build_diarizing(
    config: &Config,
    kinds: &[JobKind],
    thread: &DeviceThread,
    models_dir: &Path,
    diarize: bool,
) -> Runners {
    let mut runners = Runners::new();
    runners.insert(JobKind::Checksum, Arc::new(ChecksumRunner));
    for &kind in kinds {
        let runner: Arc<dyn Runner> = match kind {
            JobKind::Transcribe => Arc::new(
                WhisperRunner::new(
                    thread.clone(),
                    models_dir.to_path_buf(),
                    config.whisper.clone(),
                )
                .preloading_speakers(diarize),
            ),
            JobKind::Tag | JobKind::Index => Arc::new(ClipRunner::new(
                kind,
                thread.clone(),
                models_dir.to_path_buf(),
                config.clip.clone(),
            )),
            JobKind::Generate => Arc::new(GenerateRunner::new(
                thread.clone(),
                models_dir.to_path_buf(),
                config.diffusion.clone(),
            )),
            JobKind::Checksum => continue,
        };
        runners.insert(kind, runner);
    }
    runners
}
