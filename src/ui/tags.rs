//! The tags pane: images with their CLIP tags, the selection and the tag cursor.
use super::{file_name, fit, list_area, pane_block};
use crate::config::{StyleName, Theme};
use crate::state::{list_offset, AppState, Pane};
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};
use ratatui::Frame;

pub fn render(state: &AppState, theme: &Theme, f: &mut Frame, area: Rect) {
    let tg = &state.tags;
    let extra = format!("set: {}", tg.label_set_name());
    let block = pane_block(state, theme, Pane::Tags, &extra);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let shown = tg.shown();
    let selected = tg.selection().len();
    let mut header = match &tg.results {
        Some((title, r)) => format!("{title}: {} (esc: all images)", r.len()),
        None => format!("{} images", shown.len()),
    };
    if tg.anchor.is_some() || !tg.marks.is_empty() {
        header.push_str(&format!(" · {selected} selected"));
    }
    if tg.busy {
        header.push_str(" · scoring…");
    }
    f.render_widget(
        Paragraph::new(Span::styled(header, theme.get(StyleName::Muted))),
        Rect { height: 1, ..inner },
    );
    let list = list_area(Pane::Tags, area);
    let rows = list.height as usize;
    let offset = list_offset(tg.cursor, rows);
    let width = list.width as usize;
    let mut lines = Vec::with_capacity(rows);
    for (pos, &i) in shown.iter().enumerate().skip(offset).take(rows) {
        let it = &tg.items[i];
        let sel = tg.is_selected(i);
        let score = tg
            .results
            .as_ref()
            .and_then(|(_, r)| r.get(pos))
            .map(|(_, s)| format!("{s:.3} "))
            .unwrap_or_default();
        let name = fit(&file_name(&it.path), 18);
        let tags = if let Some(e) = &it.error {
            format!("error: {e}")
        } else if it.scores.is_empty() && it.accepted.is_empty() {
            "…".to_string()
        } else {
            it.tags().join(", ")
        };
        let pending = if it.pending() && !it.scores.is_empty() {
            "*"
        } else {
            " "
        };
        let head = format!("{score}{name:<18}{pending}");
        let rest = width.saturating_sub(head.chars().count() + 2);
        let mut line = Line::from(vec![
            Span::styled(if sel { "● " } else { "  " }, theme.get(StyleName::Mark)),
            Span::raw(head),
            Span::styled(
                fit(&tags, rest),
                theme.get(if it.error.is_some() {
                    StyleName::Error
                } else {
                    StyleName::Muted
                }),
            ),
        ]);
        if pos == tg.cursor {
            line = line.style(theme.get(if state.focus == Pane::Tags {
                StyleName::Selection
            } else {
                StyleName::Muted
            }));
        }
        lines.push(line);
    }
    f.render_widget(Paragraph::new(lines), list);
    // The tag cursor over the current image's candidates.
    let foot = Rect {
        y: list.bottom(),
        height: inner.bottom().saturating_sub(list.bottom()),
        ..inner
    };
    let mut spans = Vec::new();
    if let Some(it) = tg.current() {
        for (k, label) in it.candidates().iter().enumerate() {
            let mark = if it.rejected.contains(label) {
                "✗"
            } else if it.accepted.contains(label) {
                "✓"
            } else {
                ""
            };
            let score = it
                .score(label)
                .map(|s| format!(" {s:.2}"))
                .unwrap_or_default();
            let style = if k == tg.tag_cursor && state.focus == Pane::Tags {
                theme.get(StyleName::Highlight)
            } else if it.rejected.contains(label) {
                theme.get(StyleName::Muted)
            } else {
                theme.get(StyleName::Text)
            };
            spans.push(Span::styled(format!("{mark}{label}{score}"), style));
            spans.push(Span::raw("  "));
        }
    }
    f.render_widget(
        Paragraph::new(Line::from(spans)).wrap(Wrap { trim: true }),
        foot,
    );
}
