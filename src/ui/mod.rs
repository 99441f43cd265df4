//! Pure rendering: `render(&AppState, ctx, frame)`, one file per pane. Nothing here does I/O.
mod generate;
mod preview;
mod queue;
mod tags;
mod transcript;

use crate::config::{KeySection, Keymap, StyleName, Theme};
use crate::state::{AppState, Cmd, JobState, Mode, Pane};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};
use ratatui::Frame;

pub use preview::PreviewImage;

/// The smallest terminal the layout supports.
pub const MIN_SIZE: (u16, u16) = (80, 24);

/// What rendering needs besides the state.
pub struct Ctx<'a> {
    pub theme: &'a Theme,
    pub keymap: &'a Keymap,
    /// The preview image, when the terminal can show one (none in snapshot tests).
    pub image: Option<&'a mut PreviewImage>,
    /// The compare view's two images (their generations' PNGs), when they are decoded.
    pub compare: [Option<&'a mut PreviewImage>; 2],
}

/// Where each pane is drawn (fullscreen: only the focused one).
pub fn pane_rects(area: Rect, state: &AppState) -> Vec<(Pane, Rect)> {
    let [body, _status] = Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(area);
    if state.fullscreen {
        return vec![(state.focus, body)];
    }
    let [top, bottom] =
        Layout::vertical([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(body);
    let [queue, transcript] =
        Layout::horizontal([Constraint::Percentage(38), Constraint::Percentage(62)]).areas(top);
    let [tags, generate, preview] = Layout::horizontal([
        Constraint::Percentage(38),
        Constraint::Percentage(34),
        Constraint::Percentage(28),
    ])
    .areas(bottom);
    vec![
        (Pane::Queue, queue),
        (Pane::Transcript, transcript),
        (Pane::Tags, tags),
        (Pane::Generate, generate),
        (Pane::Preview, preview),
    ]
}

/// The rows of a pane's list (what a click maps onto): the block's inside minus the header.
pub fn list_area(pane: Pane, rect: Rect) -> Rect {
    let inner = Block::default().borders(Borders::ALL).inner(rect);
    let (head, foot) = match pane {
        Pane::Queue => (1, 0),
        Pane::Transcript => (1, 0),
        Pane::Tags => (1, 2),
        Pane::Generate => (0, 2),
        Pane::Preview => (0, 0),
    };
    Rect {
        y: inner.y + head.min(inner.height),
        height: inner.height.saturating_sub(head + foot),
        ..inner
    }
}

/// The pane and list row under a terminal cell.
pub fn hit(
    area: Rect,
    state: &AppState,
    col: u16,
    row: u16,
) -> Option<(Pane, Option<usize>, usize)> {
    let pos = ratatui::layout::Position { x: col, y: row };
    pane_rects(area, state)
        .into_iter()
        .find_map(|(pane, rect)| {
            if !rect.contains(pos) {
                return None;
            }
            let list = list_area(pane, rect);
            let r = list.contains(pos).then(|| (row - list.y) as usize);
            Some((pane, r, list.height as usize))
        })
}

pub(crate) fn pane_block<'a>(
    state: &AppState,
    theme: &Theme,
    pane: Pane,
    extra: &str,
) -> Block<'a> {
    let focused = state.focus == pane;
    let n = Pane::ALL
        .iter()
        .position(|&p| p == pane)
        .map_or(0, |i| i + 1);
    let border = if focused {
        StyleName::BorderFocused
    } else {
        StyleName::Border
    };
    let mut title = vec![Span::styled(
        format!(" {n} {} ", pane.title()),
        theme.get(StyleName::Title),
    )];
    if !extra.is_empty() {
        title.push(Span::styled(
            format!("{extra} "),
            theme.get(StyleName::Muted),
        ));
    }
    Block::default()
        .borders(Borders::ALL)
        .border_style(theme.get(border))
        .title(Line::from(title))
}

/// A text progress bar `width` cells wide.
pub(crate) fn bar(progress: f64, width: usize) -> String {
    let filled = ((progress.clamp(0.0, 1.0) * width as f64).round() as usize).min(width);
    format!("{}{}", "█".repeat(filled), "░".repeat(width - filled))
}

pub(crate) fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// A memory size as the status bar shows it: MiB below a GiB, else GiB to one decimal.
pub(crate) fn bytes(n: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let mib = n as f64 / MIB;
    if mib < 1024.0 {
        format!("{mib:.0} MiB")
    } else {
        format!("{:.1} GiB", mib / 1024.0)
    }
}

pub(crate) fn file_name(p: &std::path::Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// Cuts `text` to `width` display columns (chars; CJK width is not worth a dependency here).
pub(crate) fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut s: String = text.chars().take(width.saturating_sub(1)).collect();
    s.push('…');
    s
}

pub fn render(state: &AppState, ctx: &mut Ctx, f: &mut Frame) {
    let theme = ctx.theme;
    let area = f.area();
    f.render_widget(Block::default().style(theme.get(StyleName::Text)), area);
    if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
        let msg = vec![
            Line::from(Span::styled(
                "Terminal too small",
                theme.get(StyleName::Warning),
            )),
            Line::from(format!(
                "{}x{}: Atelier needs at least {}x{}. Enlarge the window (q quits).",
                area.width, area.height, MIN_SIZE.0, MIN_SIZE.1
            )),
        ];
        f.render_widget(Paragraph::new(msg).wrap(Wrap { trim: true }), area);
        return;
    }
    for (pane, rect) in pane_rects(area, state) {
        match pane {
            Pane::Queue => queue::render(state, theme, f, rect),
            Pane::Transcript => transcript::render(state, theme, f, rect),
            Pane::Tags => tags::render(state, theme, f, rect),
            Pane::Generate => generate::render(state, theme, f, rect),
            Pane::Preview => preview::render(state, ctx, f, rect),
        }
    }
    let status_area = Rect {
        y: area.bottom() - 1,
        height: 1,
        ..area
    };
    status_bar(state, theme, f, status_area);
    match &state.mode {
        Mode::Normal => {}
        Mode::Help { scroll } => help(state, ctx, f, area, *scroll),
        Mode::Palette { edit, selected } => {
            palette(theme, f, area, &edit.text, edit.cursor, *selected)
        }
        Mode::Prompt { kind, edit } => {
            let lines = edit.text.split('\n').count() as u16;
            let h = (lines + 2).clamp(3, area.height / 2);
            let w = area.width.saturating_sub(8).min(100);
            let popup = Rect::new(
                area.x + (area.width - w) / 2,
                area.y + (area.height - h) / 2,
                w,
                h,
            );
            f.render_widget(Clear, popup);
            let block = Block::default()
                .borders(Borders::ALL)
                .border_style(theme.get(StyleName::BorderFocused))
                .title(Span::styled(
                    format!(" {} ", kind.title()),
                    theme.get(StyleName::Title),
                ));
            let inner = block.inner(popup);
            f.render_widget(
                Paragraph::new(edit.text.as_str())
                    .style(theme.get(StyleName::Text))
                    .wrap(Wrap { trim: false })
                    .block(block),
                popup,
            );
            let (line, col) = edit.cursor_line_col();
            let x = inner.x + (col as u16).min(inner.width.saturating_sub(1));
            let y = inner.y + (line as u16).min(inner.height.saturating_sub(1));
            f.set_cursor_position((x, y));
        }
        Mode::ErrorDetail => {
            let text = state.last_error.clone().unwrap_or_default();
            let w = area.width.saturating_sub(10).min(110);
            let h = (area.height / 2).max(6);
            let popup = Rect::new(
                area.x + (area.width - w) / 2,
                area.y + (area.height - h) / 2,
                w,
                h,
            );
            f.render_widget(Clear, popup);
            f.render_widget(
                Paragraph::new(text)
                    .style(theme.get(StyleName::Error))
                    .wrap(Wrap { trim: false })
                    .block(
                        Block::default()
                            .borders(Borders::ALL)
                            .border_style(theme.get(StyleName::BorderFocused))
                            .title(" Last error (any key closes) "),
                    ),
                popup,
            );
        }
    }
}

fn status_bar(state: &AppState, theme: &Theme, f: &mut Frame, area: Rect) {
    let memory = match state.memory {
        None => String::new(),
        Some(m) if m.gpu => format!("{} / {} ", bytes(m.used), bytes(m.total)),
        Some(m) => format!("RSS {} / {} RAM ", bytes(m.used), bytes(m.total)),
    };
    let mut spans = vec![Span::styled(
        format!(" {} {memory}", state.device),
        theme.get(StyleName::StatusKey),
    )];
    let models = if state.models.is_empty() {
        "no model loaded".to_string()
    } else {
        let names: Vec<String> = state
            .models
            .iter()
            .map(|(n, s)| match s {
                None => n.clone(),
                Some(s) => format!("{n} ({s})"),
            })
            .collect();
        names.join(" ")
    };
    spans.push(Span::styled(
        format!(" {models} "),
        theme.get(StyleName::Status),
    ));
    let counts: Vec<String> = state
        .library
        .counts()
        .into_iter()
        .filter(|(s, _)| *s != JobState::Idle)
        .map(|(s, n)| format!("{n} {}", s.name()))
        .collect();
    if !counts.is_empty() {
        spans.push(Span::styled(
            format!("│ {} ", counts.join(" ")),
            theme.get(StyleName::Status),
        ));
    }
    if let Some(st) = &state.status {
        let style = if st.error {
            theme.get(StyleName::Error)
        } else {
            theme.get(StyleName::Status)
        };
        let mut text = st.text.lines().next().unwrap_or_default().to_string();
        if st.error {
            text.push_str("  (! for the full error)");
        }
        spans.push(Span::styled(format!("│ {text}"), style));
    }
    let right = format!(" {}  ? help  : commands ", state.theme);
    let used: usize = spans.iter().map(|s| s.content.chars().count()).sum();
    let room = (area.width as usize).saturating_sub(right.chars().count());
    let mut line = Line::from(spans);
    if used < room {
        line.spans.push(Span::styled(
            " ".repeat(room - used),
            theme.get(StyleName::Status),
        ));
        line.spans
            .push(Span::styled(right, theme.get(StyleName::Muted)));
    }
    f.render_widget(
        Paragraph::new(line).style(theme.get(StyleName::Status)),
        area,
    );
}

/// Every binding of every section, from the live keymap.
/// A help row: (key, action, description).
pub type HelpRow = (String, String, &'static str);

pub fn help_lines(keymap: &Keymap) -> Vec<(KeySection, Vec<HelpRow>)> {
    keymap
        .sections
        .iter()
        .map(|(section, keys)| {
            let rows = keys
                .iter()
                .map(|(key, action)| {
                    let desc = Cmd::from_name(action).map_or("", Cmd::description);
                    (key.to_string(), action.clone(), desc)
                })
                .collect();
            (*section, rows)
        })
        .collect()
}

fn help(state: &AppState, ctx: &Ctx, f: &mut Frame, area: Rect, scroll: usize) {
    let theme = ctx.theme;
    let focus = KeySection::of(state.focus);
    let mut lines: Vec<Line> = Vec::new();
    let mut sections = help_lines(ctx.keymap);
    // The focused pane's keys first.
    sections.sort_by_key(|(s, _)| {
        (
            *s != focus,
            *s != KeySection::List,
            *s != KeySection::Global,
        )
    });
    for (section, rows) in sections {
        lines.push(Line::from(Span::styled(
            format!("[{section}]"),
            theme.get(StyleName::Title),
        )));
        for (key, action, desc) in rows {
            lines.push(Line::from(vec![
                Span::styled(format!("  {key:<12}"), theme.get(StyleName::Timestamp)),
                Span::raw(format!("{action:<18} ")),
                Span::styled(desc.to_string(), theme.get(StyleName::Muted)),
            ]));
        }
    }
    let w = area.width.saturating_sub(6).min(96);
    let h = area.height.saturating_sub(4);
    let popup = Rect::new(area.x + (area.width - w) / 2, area.y + 2, w, h);
    f.render_widget(Clear, popup);
    f.render_widget(
        Paragraph::new(lines)
            .scroll((scroll as u16, 0))
            .style(theme.get(StyleName::Text))
            .block(
                Block::default()
                    .borders(Borders::ALL)
                    .border_style(theme.get(StyleName::BorderFocused))
                    .title(" Keys: j/k scroll, any other key closes "),
            ),
        popup,
    );
}

fn palette(theme: &Theme, f: &mut Frame, area: Rect, filter: &str, cursor: usize, selected: usize) {
    let matches = AppState::palette_matches(filter);
    let w = area.width.saturating_sub(10).min(80);
    let h = (matches.len() as u16 + 3).clamp(4, area.height.saturating_sub(4));
    let popup = Rect::new(area.x + (area.width - w) / 2, area.y + 2, w, h);
    f.render_widget(Clear, popup);
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(theme.get(StyleName::BorderFocused))
        .title(" Command palette ");
    let inner = block.inner(popup);
    f.render_widget(block, popup);
    let rows = inner.height.saturating_sub(1) as usize;
    let offset = crate::state::list_offset(selected, rows);
    let mut lines = vec![Line::from(vec![
        Span::styled(": ", theme.get(StyleName::Title)),
        Span::raw(filter.to_string()),
    ])];
    for (i, cmd) in matches.iter().enumerate().skip(offset).take(rows) {
        let style = if i == selected {
            theme.get(StyleName::Selection)
        } else {
            Style::default()
        };
        lines.push(Line::from(vec![
            Span::styled(format!("{:<18}", cmd.name()), style),
            Span::styled(
                format!(" {}", cmd.description()),
                theme.get(StyleName::Muted),
            ),
        ]));
    }
    f.render_widget(
        Paragraph::new(lines).style(theme.get(StyleName::Text)),
        inner,
    );
    f.set_cursor_position((inner.x + 2 + cursor as u16, inner.y));
}

/// The default keys as a Markdown table per section (docs/tui.md embeds it; a test keeps
/// the two equal).
pub fn keys_markdown(keymap: &Keymap) -> String {
    let mut out = String::new();
    for (section, rows) in help_lines(keymap) {
        out.push_str(&format!(
            "\n#### `[{section}]`\n\n| Key | Action | What it does |\n|---|---|---|\n"
        ));
        for (key, action, desc) in rows {
            let key = key.replace('|', "\\|");
            out.push_str(&format!("| `{key}` | `{action}` | {desc} |\n"));
        }
    }
    out
}
