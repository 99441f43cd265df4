//! Terminal ownership: a guard that restores the terminal on drop, a panic hook that
//! restores first (only for a panic on the UI thread, the one that ends the UI) and logs the
//! backtrace, and stderr redirected away from the screen.
use crate::config::ImageProtocol;
use crate::media::playback::StderrSilencer;
use crossterm::{event, execute, terminal};
use std::io::{stdout, Write};
use std::sync::OnceLock;
use std::thread::ThreadId;

/// The thread that owns the terminal (the one that entered the guard).
static UI_THREAD: OnceLock<ThreadId> = OnceLock::new();

/// Whether a panic on the current thread ends the UI. Worker threads' panics are caught on
/// purpose (the model thread, decoders, the generation thread) and reported as errors: the
/// terminal must stay in the TUI's hands for them.
fn panic_ends_ui() -> bool {
    UI_THREAD
        .get()
        .is_none_or(|ui| *ui == std::thread::current().id())
}

pub struct TerminalGuard {
    _stderr: StderrSilencer,
}

fn restore() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(
        stdout(),
        event::DisableMouseCapture,
        terminal::LeaveAlternateScreen,
        crossterm::cursor::Show
    );
    let _ = stdout().flush();
}

impl TerminalGuard {
    /// Enters raw mode and the alternate screen. stderr goes to `stderr.log` in the state dir
    /// until the guard drops, so libtorch or ALSA chatter never scribbles over the panes.
    pub fn enter(mouse: bool) -> std::io::Result<Self> {
        let _ = UI_THREAD.set(std::thread::current().id());
        install_panic_hook();
        let stderr_log = crate::logging::state_dir().join("stderr.log");
        let guard = TerminalGuard {
            _stderr: StderrSilencer::redirect_to(&stderr_log),
        };
        terminal::enable_raw_mode()?;
        execute!(stdout(), terminal::EnterAlternateScreen)?;
        if mouse {
            execute!(stdout(), event::EnableMouseCapture)?;
        }
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

fn install_panic_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if panic_ends_ui() {
                restore();
            }
            let backtrace = std::backtrace::Backtrace::force_capture();
            tracing::error!("panic: {info}\n{backtrace}");
            previous(info);
        }));
    });
}

/// The image protocol to use: the config's choice, else a guess from the environment.
/// (The TUI refines `auto` by querying the terminal.)
pub fn detect_image_protocol(configured: ImageProtocol) -> String {
    let tmux = std::env::var_os("TMUX").is_some();
    let via = if tmux { " via tmux passthrough" } else { "" };
    if configured != ImageProtocol::Auto {
        return format!("{configured:?} (from config){via}").to_lowercase();
    }
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let term = env("TERM");
    let program = env("TERM_PROGRAM");
    let guess = if std::env::var_os("KITTY_WINDOW_ID").is_some()
        || term.contains("kitty")
        || program == "ghostty"
    {
        "kitty"
    } else if program == "iTerm.app" || program == "WezTerm" {
        "iterm2"
    } else if term.contains("sixel") || term.starts_with("foot") || term.contains("mlterm") {
        "sixel"
    } else {
        "halfblocks"
    };
    format!("{guess} (detected from TERM={term:?}){via}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_panic_on_the_ui_thread_ends_the_ui() {
        let _ = UI_THREAD.set(std::thread::current().id());
        assert_eq!(UI_THREAD.get(), Some(&std::thread::current().id()));
        assert!(panic_ends_ui());
        let worker = std::thread::spawn(panic_ends_ui).join().unwrap();
        assert!(
            !worker,
            "a worker thread's panic must leave the terminal to the TUI"
        );
    }
}
