//! The generate pane: the parameters, the seed lock and the history strip.
use super::{fit, list_area, pane_block};
use crate::config::{StyleName, Theme};
use crate::state::{list_offset, AppState, Field, GenStatus, Pane};
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

pub fn render(state: &AppState, theme: &Theme, f: &mut Frame, area: Rect) {
    let g = &state.generate;
    let lock = if g.seed_locked {
        "seed locked"
    } else {
        "seed free"
    };
    let block = pane_block(state, theme, Pane::Generate, lock);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let list = list_area(Pane::Generate, area);
    let rows = list.height as usize;
    let offset = list_offset(g.field, rows);
    let width = list.width as usize;
    let mut lines = Vec::new();
    for (i, field) in Field::ALL.iter().enumerate().skip(offset).take(rows) {
        let label = format!("{:<13}", fit(field.label(), 13));
        let mut value = g.field_text(*field).replace('\n', " ⏎ ");
        if *field == Field::Seed && g.seed_locked {
            value.push_str(" (locked)");
        }
        if value.is_empty() {
            value = "—".into();
        }
        let mut line = Line::from(vec![
            Span::styled(label, theme.get(StyleName::Muted)),
            Span::raw(fit(&value, width.saturating_sub(14))),
        ]);
        if i == g.field {
            line = line.style(theme.get(if state.focus == Pane::Generate {
                StyleName::Selection
            } else {
                StyleName::Muted
            }));
        }
        lines.push(line);
    }
    f.render_widget(Paragraph::new(lines), list);
    // The history strip: one cell per generation.
    let foot = Rect {
        y: list.bottom(),
        height: inner.bottom().saturating_sub(list.bottom()),
        ..inner
    };
    let mut spans = vec![Span::styled("history ", theme.get(StyleName::Muted))];
    if g.history.is_empty() {
        spans.push(Span::styled(
            "none yet (r generates)",
            theme.get(StyleName::Muted),
        ));
    }
    for (i, h) in g.history.iter().enumerate() {
        let (mark, style) = match &h.status {
            GenStatus::Running { step, total } => {
                (format!("{step}/{total}"), theme.get(StyleName::Progress))
            }
            GenStatus::Done(_) => ("✓".to_string(), theme.get(StyleName::Success)),
            GenStatus::Failed(_) => ("✗".to_string(), theme.get(StyleName::Error)),
            GenStatus::Cancelled => ("⊘".to_string(), theme.get(StyleName::Muted)),
        };
        let style = if i == g.history_cursor {
            style.patch(theme.get(StyleName::Highlight))
        } else {
            style
        };
        spans.push(Span::styled(format!("#{} {mark}", i + 1), style));
        spans.push(Span::raw(" "));
    }
    let status = match g.history.get(g.history_cursor) {
        Some(h) => match &h.status {
            GenStatus::Failed(e) => fit(e, inner.width as usize),
            _ => format!(
                "seed {} · {} steps · {}",
                h.request.seed, h.request.steps, h.request.scheduler
            ),
        },
        None => String::new(),
    };
    f.render_widget(
        Paragraph::new(vec![
            Line::from(spans),
            Line::from(Span::styled(status, theme.get(StyleName::Muted))),
        ]),
        foot,
    );
}
