//! CLIP: preprocessing, tokenizer, the exported model, zero-shot labels, the embedding index,
//! and the session every front end holds (session.rs).
pub mod index;
pub mod job;
pub mod label_cache;
pub mod model;
pub mod preprocess;
pub mod query;
pub mod session;
pub mod text_clean;
pub mod tokenizer;
pub mod zero_shot;

pub use model::{ClipError, ClipModel};
pub use preprocess::PreprocessConfig;
pub use session::ClipSession;
pub use tokenizer::ClipTokenizer;
