//! Logging to `$XDG_STATE_HOME/atelier/atelier.log`; the level comes from `ATELIER_LOG`,
//! else `RUST_LOG`, else the config. Nothing is logged to the terminal: the TUI owns it. The log rotates at
//! [`LOG_MAX_BYTES`] (`atelier.log.1` … `.LOG_KEEP`, oldest dropped), so a daemon that runs
//! for months keeps a bounded log.
use std::path::PathBuf;
use tracing_subscriber::EnvFilter;

pub fn state_dir() -> PathBuf {
    dirs::state_dir()
        .or_else(dirs::data_local_dir)
        .unwrap_or_else(std::env::temp_dir)
        .join("atelier")
}

pub fn log_path() -> PathBuf {
    state_dir().join("atelier.log")
}

/// The size at which `atelier.log` is rotated.
pub const LOG_MAX_BYTES: usize = 10 << 20;
/// Rotated logs kept beside it.
pub const LOG_KEEP: usize = 5;

/// Starts file logging. Keep the guard alive for the life of the program.
pub fn init(config_level: &str) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    let dir = state_dir();
    std::fs::create_dir_all(&dir).ok()?;
    let filter = EnvFilter::try_from_env("ATELIER_LOG")
        .or_else(|_| EnvFilter::try_from_env("RUST_LOG"))
        .or_else(|_| EnvFilter::try_new(config_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let appender = file_rotate::FileRotate::new(
        log_path(),
        file_rotate::suffix::AppendCount::new(LOG_KEEP),
        file_rotate::ContentLimit::BytesSurpassed(LOG_MAX_BYTES),
        file_rotate::compression::Compression::None,
        None,
    );
    let (writer, guard) = tracing_appender::non_blocking(appender);
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .try_init()
        .ok()?;
    Some(guard)
}
