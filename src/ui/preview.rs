//! The preview pane: the selected image through ratatui-image (resized off the render thread).
use super::Ctx;
use super::{file_name, fit, pane_block};
use crate::config::{StyleName, Theme};
use crate::state::{AppState, GenStatus, Generation, Pane};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};
use ratatui::Frame;
use ratatui_image::thread::ThreadProtocol;
use ratatui_image::{Resize, StatefulImage};
use std::path::PathBuf;

/// The decoded image the app holds for the preview, with the protocol's name.
pub struct PreviewImage {
    pub path: PathBuf,
    pub protocol: ThreadProtocol,
}

pub fn render(state: &AppState, ctx: &mut Ctx, f: &mut Frame, area: Rect) {
    let theme = ctx.theme;
    let g = &state.generate;
    if let (Some((a, b)), Pane::Generate | Pane::Preview) = (g.compare, state.focus) {
        return compare(state, ctx, f, area, [a, b]);
    }
    let extra = state.preview.as_deref().map(file_name).unwrap_or_default();
    let block = pane_block(state, theme, Pane::Preview, &extra);
    let inner = block.inner(area);
    f.render_widget(block, area);
    match (&state.preview, ctx.image.as_deref_mut()) {
        (None, _) => f.render_widget(
            Paragraph::new(Span::styled(
                "no image selected (tags, library images and generations show here)",
                theme.get(StyleName::Muted),
            ))
            .wrap(Wrap { trim: true }),
            inner,
        ),
        (Some(p), img) => image_or_loading(f, theme, inner, p, img),
    }
}

/// The image at `path` when it is the decoded one, else "loading NAME".
fn image_or_loading(
    f: &mut Frame,
    theme: &Theme,
    area: Rect,
    path: &std::path::Path,
    image: Option<&mut PreviewImage>,
) {
    match image {
        Some(img) if img.path == path => f.render_stateful_widget(
            StatefulImage::new().resize(Resize::Fit(None)),
            area,
            &mut img.protocol,
        ),
        _ => f.render_widget(
            Paragraph::new(Span::styled(
                fit(&format!("loading {}", file_name(path)), area.width as usize),
                theme.get(StyleName::Muted),
            )),
            area,
        ),
    }
}

/// The image a history entry shows: its PNG when done, else its latest live preview.
fn shown(h: &Generation) -> Option<&std::path::Path> {
    match &h.status {
        GenStatus::Done(p) => Some(p),
        _ => h.preview.as_deref(),
    }
}

/// Two generations side by side: each one's image above its parameters.
fn compare(state: &AppState, ctx: &mut Ctx, f: &mut Frame, area: Rect, pair: [usize; 2]) {
    let theme = ctx.theme;
    let block = pane_block(state, theme, Pane::Preview, "compare (esc closes)");
    let inner = block.inner(area);
    f.render_widget(block, area);
    let halves: [Rect; 2] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(inner);
    for (slot, (i, rect)) in pair.into_iter().zip(halves).enumerate() {
        let Some(h) = state.generate.history.get(i) else {
            continue;
        };
        let r = &h.request;
        let status = match &h.status {
            GenStatus::Done(p) => file_name(p),
            GenStatus::Running { step, total } => format!("{step}/{total}"),
            GenStatus::Failed(_) => "failed".into(),
            GenStatus::Cancelled => "cancelled".into(),
        };
        let mut lines = vec![
            Line::from(Span::styled(
                format!("#{} {status}", i + 1),
                theme.get(StyleName::Title),
            )),
            Line::from(r.prompt.clone()),
            Line::from(Span::styled(
                format!("seed {}", r.seed),
                theme.get(StyleName::Muted),
            )),
            Line::from(Span::styled(
                format!("{} steps, cfg {:.1}", r.steps, r.guidance),
                theme.get(StyleName::Muted),
            )),
            Line::from(Span::styled(
                format!("{} {}x{}", r.scheduler, r.width, r.height),
                theme.get(StyleName::Muted),
            )),
        ];
        if !r.negative.is_empty() {
            lines.insert(
                2,
                Line::from(Span::styled(
                    format!("not: {}", r.negative),
                    theme.get(StyleName::Muted),
                )),
            );
        }
        // The parameters take what they need at the bottom; the image gets the rest.
        let text_rows = (lines.len() as u16 + 1).min(rect.height / 2).max(1);
        let [pic, text] =
            Layout::vertical([Constraint::Min(1), Constraint::Length(text_rows)]).areas(rect);
        match shown(h) {
            Some(p) => image_or_loading(f, theme, pic, p, ctx.compare[slot].as_deref_mut()),
            None => f.render_widget(
                Paragraph::new(Span::styled("no image", theme.get(StyleName::Muted))),
                pic,
            ),
        }
        f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), text);
    }
}
