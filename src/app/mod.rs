//! The TUI runtime: terminal guard, one event channel, render only when something changed.
pub mod terminal;

use crate::config::{self, parse_key, KeyBinding, Theme};
use crate::engine::store;
use crossterm::event::{self, Event, KeyEventKind};
use ratatui::layout::{Constraint, Layout};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

enum Msg {
    Input(Event),
    InputClosed,
}

struct Ui {
    loaded: config::Loaded,
    dirs: Vec<PathBuf>,
    device: String,
    models: Vec<String>,
    show_help: bool,
    quit: bool,
}

/// Runs the TUI until the user quits.
pub fn run(loaded: config::Loaded, dirs: Vec<PathBuf>, device: String) -> anyhow::Result<()> {
    let models_dir = store::models_dir(&loaded.config.models_dir);
    let models = store::list(&models_dir)
        .into_iter()
        .map(|m| match m {
            Ok(m) => format!(
                "{:<24} {} {}",
                m.name(),
                m.manifest.family,
                m.manifest.variant
            ),
            Err(e) => format!("error: {e}"),
        })
        .collect();
    let mouse = loaded.config.ui.mouse;
    let frame_budget = Duration::from_millis(1000 / u64::from(loaded.config.ui.max_fps.max(1)));
    let mut ui = Ui {
        loaded,
        dirs,
        device,
        models,
        show_help: false,
        quit: false,
    };

    let _guard = terminal::TerminalGuard::enter(mouse)?;
    let mut term =
        ratatui::Terminal::new(ratatui::backend::CrosstermBackend::new(std::io::stdout()))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || loop {
        match event::read() {
            Ok(ev) => {
                if tx.send(Msg::Input(ev)).is_err() {
                    break;
                }
            }
            Err(_) => {
                let _ = tx.send(Msg::InputClosed);
                break;
            }
        }
    });

    let mut dirty = true;
    let mut last_draw = Instant::now() - frame_budget;
    while !ui.quit {
        if dirty && last_draw.elapsed() >= frame_budget {
            term.draw(|f| render(&ui, f))?;
            last_draw = Instant::now();
            dirty = false;
        }
        let timeout = if dirty {
            frame_budget.saturating_sub(last_draw.elapsed())
        } else {
            Duration::from_millis(250)
        };
        // Drain everything pending before the next frame.
        let first = match rx.recv_timeout(timeout) {
            Ok(m) => Some(m),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        for msg in first.into_iter().chain(rx.try_iter()) {
            dirty |= handle(&mut ui, msg);
        }
    }
    Ok(())
}

fn handle(ui: &mut Ui, msg: Msg) -> bool {
    match msg {
        Msg::InputClosed => {
            ui.quit = true;
            false
        }
        Msg::Input(Event::Key(key)) if key.kind != KeyEventKind::Release => {
            let binding = KeyBinding {
                code: key.code,
                modifiers: key.modifiers - event::KeyModifiers::SHIFT,
            };
            let binding_shift = KeyBinding {
                code: key.code,
                modifiers: key.modifiers,
            };
            let action = ui
                .loaded
                .keymap
                .action("global", binding_shift)
                .or_else(|| ui.loaded.keymap.action("global", binding))
                .map(str::to_string);
            match action.as_deref() {
                Some("quit") => ui.quit = true,
                Some("help") => ui.show_help = !ui.show_help,
                Some("cancel") => ui.show_help = false,
                Some("cycle-theme") => {
                    let user = config::config_dir().map(|d| d.join("themes"));
                    let names = Theme::available(user.as_deref());
                    let i = names
                        .iter()
                        .position(|n| *n == ui.loaded.theme.name)
                        .map_or(0, |i| (i + 1) % names.len());
                    if let Ok(t) = Theme::load(&names[i], user.as_deref()) {
                        ui.loaded.theme = t;
                    }
                }
                _ if Some(binding) == parse_key("esc").ok() => ui.show_help = false,
                _ => return false,
            }
            true
        }
        Msg::Input(Event::Resize(..)) => true,
        Msg::Input(_) => false,
    }
}

fn render(ui: &Ui, f: &mut Frame) {
    let theme = &ui.loaded.theme;
    let area = f.area();
    f.render_widget(Block::default().style(theme.get("text")), area);
    if area.width < 80 || area.height < 24 {
        let msg = format!(
            "Terminal too small: {}x{} (Atelier needs at least 80x24)",
            area.width, area.height
        );
        f.render_widget(Paragraph::new(msg).style(theme.get("warning")), area);
        return;
    }
    let [body, status] = Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(area);
    let mut lines = vec![Line::from(Span::styled("Models", theme.get("title")))];
    if ui.models.is_empty() {
        lines.push(Line::from(Span::styled(
            "  none installed: run tools/dev.sh demo or `atelier models import`",
            theme.get("muted"),
        )));
    }
    lines.extend(ui.models.iter().map(|m| Line::from(format!("  {m}"))));
    lines.push(Line::default());
    lines.push(Line::from(Span::styled("Folders", theme.get("title"))));
    lines.extend(
        ui.dirs
            .iter()
            .map(|d| Line::from(format!("  {}", d.display()))),
    );
    for e in &ui.loaded.errors {
        lines.push(Line::from(Span::styled(
            format!("config: {e}"),
            theme.get("error"),
        )));
    }
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(theme.get("border.focused"))
        .title(Span::styled(" Atelier ", theme.get("title")));
    f.render_widget(Paragraph::new(lines).block(block), body);
    let status_line = Line::from(vec![
        Span::styled(format!(" {} ", ui.device), theme.get("status.key")),
        Span::styled(
            format!(" theme {}  ? help  q quit ", theme.name),
            theme.get("status"),
        ),
    ]);
    f.render_widget(
        Paragraph::new(status_line).style(theme.get("status")),
        status,
    );
    if ui.show_help {
        let mut help: Vec<Line> = Vec::new();
        for (section, keys) in &ui.loaded.keymap.sections {
            help.push(Line::from(Span::styled(
                format!("[{section}]"),
                theme.get("title"),
            )));
            for (key, action) in keys {
                let desc = crate::state::action_description(action).unwrap_or(action);
                help.push(Line::from(format!("  {:<12} {desc}", key.to_string())));
            }
        }
        let w = 60.min(body.width);
        let h = (help.len() as u16 + 2).min(body.height);
        let popup = ratatui::layout::Rect::new(
            body.x + (body.width - w) / 2,
            body.y + (body.height - h) / 2,
            w,
            h,
        );
        f.render_widget(Clear, popup);
        f.render_widget(
            Paragraph::new(help)
                .block(
                    Block::default()
                        .borders(Borders::ALL)
                        .title(" Keys (esc closes) ")
                        .border_style(theme.get("border.focused")),
                )
                .style(theme.get("text")),
            popup,
        );
    }
}
