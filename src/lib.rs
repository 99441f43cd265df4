//! Atelier: a terminal media workstation on libtorch.
pub mod app;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod domain;
pub mod engine;
pub mod jobs;
pub mod logging;
pub mod media;
pub mod output;
pub mod state;
pub mod transcript;
pub mod ui;
pub mod watch;
