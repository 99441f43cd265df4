//! The library / queue pane.
use super::{bar, duration, file_name, fit, list_area, pane_block};
use crate::config::{StyleName, Theme};
use crate::domain::JobKind;
use crate::state::{list_offset, AppState, JobState, MediaKind, Pane};
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

fn icon(state: JobState) -> &'static str {
    match state {
        JobState::Idle => "·",
        JobState::Queued => "…",
        JobState::Running => "▶",
        JobState::Done => "✓",
        JobState::Failed => "✗",
        JobState::Cancelled => "⊘",
    }
}

/// The job kind the TUI runs on a file of this kind.
fn usual_kind(kind: MediaKind) -> Option<JobKind> {
    match kind {
        MediaKind::Audio => Some(JobKind::Transcribe),
        MediaKind::Image => Some(JobKind::Tag),
        MediaKind::Prompt => Some(JobKind::Generate),
        MediaKind::Other => None,
    }
}

pub fn render(state: &AppState, theme: &Theme, f: &mut Frame, area: Rect) {
    let lib = &state.library;
    let mut filter = Vec::new();
    if let Some(k) = lib.filter.kind {
        filter.push(k.name());
    }
    if let Some(s) = lib.filter.state {
        filter.push(s.name());
    }
    let visible = lib.visible();
    let extra = if filter.is_empty() {
        format!("{} files", visible.len())
    } else {
        format!(
            "{}/{} files, filter: {}",
            visible.len(),
            lib.items.len(),
            filter.join(" ")
        )
    };
    let block = pane_block(state, theme, Pane::Queue, &extra);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let width = inner.width as usize;
    let header = match lib.overall() {
        Some((p, eta)) => {
            let eta = eta
                .map(|e| format!(" ETA {}", duration(e)))
                .unwrap_or_default();
            let w = width.saturating_sub(6 + eta.len()).min(30);
            Line::from(vec![
                Span::styled(bar(p, w), theme.get(StyleName::Progress)),
                Span::raw(format!(" {:>3.0}%{eta}", p * 100.0)),
            ])
        }
        None if lib.items.is_empty() => Line::from(Span::styled(
            "no files: atelier DIR… opens folders",
            theme.get(StyleName::Muted),
        )),
        None => Line::from(Span::styled("no jobs yet", theme.get(StyleName::Muted))),
    };
    f.render_widget(Paragraph::new(header), Rect { height: 1, ..inner });
    let list = list_area(Pane::Queue, area);
    let rows = list.height as usize;
    let offset = list_offset(lib.cursor, rows);
    let mut lines = Vec::with_capacity(rows);
    for (pos, &i) in visible.iter().enumerate().skip(offset).take(rows) {
        let it = &lib.items[i];
        let marked = lib.marks.contains(&it.path);
        // A journal job of another kind than the file's usual one says which it is.
        let kind = match it.job_kind {
            Some(k) if Some(k) != usual_kind(it.kind) => format!(" {k}"),
            _ => String::new(),
        };
        let tail = match it.state {
            JobState::Running => {
                let eta = it
                    .eta
                    .map(|e| format!(" {}", duration(e)))
                    .unwrap_or_default();
                format!("{kind} {}{eta}", bar(it.progress, 8))
            }
            JobState::Queued if it.job.is_some() => format!("{kind} queued p{}", it.priority),
            s => format!("{kind} {}", s.name()),
        };
        let name_w = width.saturating_sub(4 + tail.chars().count());
        let name = format!("{:<name_w$}", fit(&file_name(&it.path), name_w));
        let state_style = match it.state {
            JobState::Failed => theme.get(StyleName::Error),
            JobState::Done => theme.get(StyleName::Success),
            JobState::Running => theme.get(StyleName::Progress),
            _ => theme.get(StyleName::Muted),
        };
        let mut line = Line::from(vec![
            Span::styled(if marked { "●" } else { " " }, theme.get(StyleName::Mark)),
            Span::styled(format!("{} ", icon(it.state)), state_style),
            Span::raw(match it.kind {
                MediaKind::Audio => "♪",
                MediaKind::Image => "▣",
                MediaKind::Prompt => "✎",
                MediaKind::Other => "·",
            }),
            Span::raw(name),
            Span::styled(tail, state_style),
        ]);
        if pos == lib.cursor {
            line = line.style(theme.get(if state.focus == Pane::Queue {
                StyleName::Selection
            } else {
                StyleName::Muted
            }));
        }
        lines.push(line);
    }
    f.render_widget(Paragraph::new(lines), list);
}
