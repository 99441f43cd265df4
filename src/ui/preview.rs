//! The preview pane: the selected image through ratatui-image (resized off the render thread).
use super::{file_name, fit, pane_block};
use crate::config::Theme;
use crate::state::{AppState, GenStatus, Pane};
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

pub fn render(
    state: &AppState,
    theme: &Theme,
    image: Option<&mut PreviewImage>,
    f: &mut Frame,
    area: Rect,
) {
    let g = &state.generate;
    if let (Some((a, b)), Pane::Generate | Pane::Preview) = (g.compare, state.focus) {
        return compare(state, theme, f, area, a, b);
    }
    let extra = state.preview.as_deref().map(file_name).unwrap_or_default();
    let block = pane_block(state, theme, Pane::Preview, &extra);
    let inner = block.inner(area);
    f.render_widget(block, area);
    match (&state.preview, image) {
        (None, _) => f.render_widget(
            Paragraph::new(Span::styled(
                "no image selected (tags, library images and generations show here)",
                theme.get("muted"),
            ))
            .wrap(Wrap { trim: true }),
            inner,
        ),
        (Some(p), Some(img)) if img.path == *p => {
            f.render_stateful_widget(
                StatefulImage::new().resize(Resize::Fit(None)),
                inner,
                &mut img.protocol,
            );
        }
        (Some(p), _) => f.render_widget(
            Paragraph::new(Span::styled(
                fit(&format!("loading {}", file_name(p)), inner.width as usize),
                theme.get("muted"),
            )),
            inner,
        ),
    }
}

/// Two generations side by side: their parameters (the images need the SD engine).
fn compare(state: &AppState, theme: &Theme, f: &mut Frame, area: Rect, a: usize, b: usize) {
    let block = pane_block(state, theme, Pane::Preview, "compare (esc closes)");
    let inner = block.inner(area);
    f.render_widget(block, area);
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(inner);
    for (i, rect) in [(a, left), (b, right)] {
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
        let lines = vec![
            Line::from(Span::styled(
                format!("#{} {status}", i + 1),
                theme.get("title"),
            )),
            Line::from(r.prompt.clone()),
            Line::from(Span::styled(format!("seed {}", r.seed), theme.get("muted"))),
            Line::from(Span::styled(
                format!("{} steps, cfg {:.1}", r.steps, r.guidance),
                theme.get("muted"),
            )),
            Line::from(Span::styled(
                format!("{} {}x{}", r.scheduler, r.width, r.height),
                theme.get("muted"),
            )),
        ];
        f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), rect);
    }
}
