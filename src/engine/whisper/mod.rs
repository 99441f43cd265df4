//! Whisper: log-mel front end, tokenizer, window decoding, the transcription loop, VAD.
pub mod audio;
pub mod batched;
pub mod decode;
pub mod job;
pub mod model;
pub mod timing;
pub mod tokenizer;
pub mod transcribe;
pub mod vad;

pub use decode::{DecodeOptions, Task};
pub use model::WhisperModel;
pub use transcribe::{transcribe, Event, TranscribeError, TranscribeOptions};
