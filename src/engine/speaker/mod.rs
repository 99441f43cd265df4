//! Speaker diarization: resemblyzer's GE2E speaker encoder (TorchScript, `model.rs`), windows
//! over the VAD's speech ranges and their embeddings (`diarize.rs`), and the pure parts:
//! agglomerative clustering with the speaker count estimated (`cluster.rs`), speaker turns and
//! their alignment to Whisper's words (`align.rs`), and the diarization error rate (`der.rs`).
pub mod align;
pub mod cluster;
pub mod der;
pub mod diarize;
pub mod model;

pub use align::{assign_speakers, speaker_label, Turn};
pub use cluster::SpeakerCount;
pub use diarize::{diarize, Diarization, DiarizeOptions};
pub use model::SpeakerModel;

/// The store name an imported resemblyzer encoder gets, and the one diarization loads.
pub const DEFAULT_MODEL: &str = "speaker-resemblyzer";

/// What to tell a user whose store has no speaker encoder.
pub const MISSING_MODEL_HINT: &str = "diarization needs the speaker encoder: atelier models import speaker Resemblyzer-0.1.4-py3-none-any.whl (pip download --no-deps resemblyzer==0.1.4)";
