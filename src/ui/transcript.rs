//! The transcript pane: segments with timestamps, the cursor, search matches and playback.
use super::{file_name, fit, list_area, pane_block};
use crate::config::{StyleName, Theme};
use crate::output::writers::format_timestamp;
use crate::state::{list_offset, AppState, JobState, Pane};
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

pub fn render(state: &AppState, theme: &Theme, f: &mut Frame, area: Rect) {
    let t = &state.transcript;
    let extra = match (&t.path, t.doc()) {
        (Some(p), Some(d)) => {
            let mut s = format!(
                "{} · {} segments",
                file_name(p),
                d.transcript.segments.len()
            );
            let speakers = t.speakers().len();
            if speakers > 0 {
                s.push_str(&format!(" · {speakers} speakers"));
            }
            if d.modified {
                s.push_str(" · modified");
            }
            s
        }
        (Some(p), None) => file_name(p),
        _ => String::new(),
    };
    let block = pane_block(state, theme, Pane::Transcript, &extra);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let header = match (&t.path, t.doc()) {
        (None, _) => "select an audio file in the library".to_string(),
        (Some(p), doc) => {
            let job = state
                .library
                .items
                .iter()
                .find(|i| &i.path == p)
                .map(|i| i.state);
            let live = match job {
                Some(JobState::Running) => "transcribing: segments appear as they decode",
                Some(JobState::Queued) => "queued",
                Some(JobState::Failed) => "failed (see the status bar)",
                _ if doc.is_some_and(|d| d.complete) => "done",
                _ => "",
            };
            let mut h = live.to_string();
            if let Some(name) = &t.speaker_filter {
                h.push_str(&format!(" · only {name} (f: all)"));
            }
            if !t.search.is_empty() {
                h.push_str(&format!(" · /{} ({} matches)", t.search, t.matches.len()));
            }
            h
        }
    };
    f.render_widget(
        Paragraph::new(Span::styled(header, theme.get(StyleName::Muted))),
        Rect { height: 1, ..inner },
    );
    let list = list_area(Pane::Transcript, area);
    let rows = list.height as usize;
    let offset = list_offset(t.cursor_row(), rows);
    let playing = t
        .playing
        .as_ref()
        .filter(|(p, _, _)| Some(p) == t.path.as_ref());
    let speakers = t.speakers();
    let segments = t.segments();
    let mut lines = Vec::with_capacity(rows);
    for &i in t.rows().iter().skip(offset).take(rows) {
        let seg = &segments[i];
        let stamp = format!("{} ", format_timestamp(seg.start, false, "."));
        let mut spans = vec![Span::styled(stamp.clone(), theme.get(StyleName::Timestamp))];
        let mut used = stamp.chars().count();
        if let Some(name) = seg.speaker.as_deref() {
            // the label keeps at most a third of the line
            let label = fit(name, (list.width as usize / 3).max(4));
            let colour = speakers.iter().position(|s| *s == name).unwrap_or(0);
            used += label.chars().count() + 1;
            spans.push(Span::styled(label, theme.get(StyleName::speaker(colour))));
            spans.push(Span::raw(" "));
        }
        let text_w = (list.width as usize).saturating_sub(used);
        let is_match = t.matches.contains(&i);
        let play_here = playing.filter(|(_, s, _)| *s == i);
        match (play_here, &seg.words) {
            (Some((_, _, pos)), Some(words)) => {
                // Word highlighting follows playback.
                let mut used = 0;
                for w in words {
                    let n = w.word.chars().count();
                    if used + n > text_w {
                        break;
                    }
                    used += n;
                    let style = if *pos >= w.start && *pos < w.end {
                        theme.get(StyleName::Highlight)
                    } else {
                        theme.get(StyleName::Text)
                    };
                    spans.push(Span::styled(w.word.clone(), style));
                }
            }
            _ => {
                let style = if play_here.is_some() || is_match {
                    theme.get(StyleName::Highlight)
                } else {
                    theme.get(StyleName::Text)
                };
                spans.push(Span::styled(fit(seg.text.trim(), text_w), style));
            }
        }
        let mut line = Line::from(spans);
        if i == t.cursor {
            line = line.style(theme.get(if state.focus == Pane::Transcript {
                StyleName::Selection
            } else {
                StyleName::Muted
            }));
        }
        lines.push(line);
    }
    f.render_widget(Paragraph::new(lines), list);
}
