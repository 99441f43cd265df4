//! Terminal ownership: a guard that restores the terminal on drop, a panic hook that
//! restores first (only for a panic on the UI thread, the one that ends the UI) and logs the
//! backtrace, and stderr redirected away from the screen.
use crate::config::ImageProtocol;
use crate::media::playback::StderrSilencer;
use crossterm::{event, execute, terminal};
use ratatui_image::picker::{Picker, ProtocolType};
use std::io::IsTerminal;
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

/// The one way the image protocol is chosen (the TUI, `doctor`, `generate --preview`):
/// ratatui-image's terminal query, unless the config names a protocol. Returns the picker and
/// how the protocol was chosen. The query writes to and reads from the terminal, so it runs
/// only when stdin and stdout are one, and before anything else reads input.
pub fn image_picker(configured: ImageProtocol) -> (Picker, &'static str) {
    let forced = match configured {
        ImageProtocol::Kitty => Some(ProtocolType::Kitty),
        ImageProtocol::Sixel => Some(ProtocolType::Sixel),
        ImageProtocol::Iterm2 => Some(ProtocolType::Iterm2),
        ImageProtocol::Halfblocks => return (Picker::halfblocks(), "from config"),
        ImageProtocol::Auto => None,
    };
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let (mut picker, how) = if !interactive {
        (Picker::halfblocks(), "not a terminal")
    } else {
        match Picker::from_query_stdio() {
            Ok(p) => (p, "answered by the terminal"),
            Err(_) => (Picker::halfblocks(), "the terminal did not answer"),
        }
    };
    match forced {
        Some(p) => {
            picker.set_protocol_type(p);
            (picker, "from config")
        }
        None => (picker, how),
    }
}

/// `kitty (answered by the terminal) via tmux passthrough`, for `doctor` and the log.
pub fn describe_protocol(picker: &Picker, how: &str) -> String {
    let name = match picker.protocol_type() {
        ProtocolType::Kitty => "kitty",
        ProtocolType::Sixel => "sixel",
        ProtocolType::Iterm2 => "iterm2",
        ProtocolType::Halfblocks => "halfblocks",
    };
    let via = if picker.tmux_detected() {
        " via tmux passthrough"
    } else {
        ""
    };
    format!("{name} ({how}){via}")
}

/// viuer's settings for printing an image inline with the chosen protocol (viuer is built
/// without sixel, so sixel terminals get half blocks).
pub fn viuer_config(protocol: ProtocolType, width: u32) -> viuer::Config {
    viuer::Config {
        absolute_offset: false,
        width: Some(width),
        use_kitty: protocol == ProtocolType::Kitty,
        use_iterm: protocol == ProtocolType::Iterm2,
        ..Default::default()
    }
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
