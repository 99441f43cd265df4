//! Application state and the pure reducer. No tokio, no tch: testable without a terminal.
mod action;

pub use action::{action_description, ACTIONS};
