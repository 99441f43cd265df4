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
