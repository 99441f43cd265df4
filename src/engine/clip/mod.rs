//! CLIP: preprocessing, tokenizer, the exported model, zero-shot labels and the embedding index.
pub mod index;
pub mod job;
pub mod label_cache;
pub mod model;
pub mod preprocess;
pub mod query;
pub mod text_clean;
pub mod tokenizer;
pub mod zero_shot;

pub use model::{ClipError, ClipModel};
pub use preprocess::PreprocessConfig;
pub use tokenizer::ClipTokenizer;
