//! The generate pane's views (ratatui TestBackend + insta): the compare view with both images
//! (halfblocks, so the snapshot shows them as coloured cells) and their parameters, and the
//! status bar's device memory and loaded models. States are built through the reducer with
//! fixed paths. The image flow end to end (tmux, a real model) is in tui_e2e.rs.
use atelier::config::{Keymap, Theme};
use atelier::state::{update, Action, AppState, Cmd, Event, Memory, Pane, TextKey};
use atelier::ui::{self, Ctx, PreviewImage};
use ratatui::backend::TestBackend;
use ratatui::style::Color;
use ratatui::Terminal;
use ratatui_image::picker::Picker;
use ratatui_image::thread::{ResizeRequest, ThreadProtocol};
use std::path::PathBuf;
use std::sync::mpsc;

fn cmd(s: &mut AppState, c: Cmd) {
    update(s, Action::Cmd(c));
}

/// Two finished generations (a red and a blue image), compared.
fn compared() -> AppState {
    let mut s = AppState::new("CPU".into(), vec!["dark".into()], "dark".into(), 7);
    s.focus = Pane::Generate;
    for (i, prompt) in ["a red bicycle", "a blue bicycle"].iter().enumerate() {
        cmd(&mut s, Cmd::EditPrompt);
        for _ in 0..20 {
            update(&mut s, Action::Text(TextKey::Backspace));
        }
        for c in prompt.chars() {
            update(&mut s, Action::Text(TextKey::Char(c)));
        }
        update(&mut s, Action::Text(TextKey::Enter));
        cmd(&mut s, Cmd::Generate);
        let id = s.generate.history[i].request.id;
        let image = PathBuf::from(format!(
            "/out/0000{i}-{}.png",
            s.generate.history[i].request.seed
        ));
        update(&mut s, Action::Event(Event::GenerateDone { id, image }));
    }
    cmd(&mut s, Cmd::Compare);
    assert_eq!(s.generate.compare, Some((1, 0)));
    s
}

fn solid(rgb: [u8; 3]) -> image::DynamicImage {
    image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(400, 400, |x, _| {
        // Left half the colour, right half white: the image's layout shows in the cells.
        if x < 200 {
            image::Rgb(rgb)
        } else {
            image::Rgb([255, 255, 255])
        }
    }))
}

/// Renders with the compare images, resizing them as the app's resize threads would.
fn screen(s: &mut AppState, w: u16, h: u16, images: bool) -> String {
    render(s, w, h, images).0
}

/// The screen as text, and the columns where each image's colour shows.
fn render(s: &mut AppState, w: u16, h: u16, images: bool) -> (String, [Vec<u16>; 2]) {
    s.size = (w, h);
    let theme = Theme::preset_default();
    let keymap = Keymap::preset();
    let picker = Picker::halfblocks();
    let (tx, rx) = mpsc::channel::<ResizeRequest>();
    let path = |i: usize| match &s.generate.history[i].status {
        atelier::state::GenStatus::Done(p) => p.clone(),
        other => panic!("{other:?}"),
    };
    let (a, b) = s.generate.compare.unwrap();
    let mut slots: Vec<PreviewImage> = [a, b]
        .into_iter()
        // History #1 is the red bicycle, #2 the blue one.
        .map(|i| (i, if i == 0 { [200, 30, 30] } else { [30, 30, 200] }))
        .map(|(i, rgb)| PreviewImage {
            path: path(i),
            protocol: ThreadProtocol::new(tx.clone(), Some(picker.new_resize_protocol(solid(rgb)))),
        })
        .collect();
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    for _ in 0..2 {
        term.draw(|f| {
            let (x, y) = slots.split_at_mut(1);
            let compare = if images {
                [Some(&mut x[0]), Some(&mut y[0])]
            } else {
                [None, None]
            };
            ui::render(
                s,
                &mut Ctx {
                    theme: &theme,
                    keymap: &keymap,
                    image: None,
                    compare,
                },
                f,
            )
        })
        .unwrap();
        // The first frame asks for the resizes; the second shows them.
        for (i, req) in rx.try_iter().enumerate() {
            let done = req.resize_encode().unwrap();
            assert!(slots[i].protocol.update_resized_protocol(done));
        }
    }
    let buf = term.backend().buffer();
    let cols = |c: Color| {
        let mut v: Vec<u16> = (0..w)
            .filter(|&x| (0..h).any(|y| buf[(x, y)].fg == c || buf[(x, y)].bg == c))
            .collect();
        v.dedup();
        v
    };
    (
        term.backend().to_string(),
        [cols(Color::Rgb(200, 30, 30)), cols(Color::Rgb(30, 30, 200))],
    )
}

#[test]
fn compare_shows_both_images_with_their_parameters() {
    let mut s = compared();
    // The preview pane full screen (5, then f), where the compare view has room.
    s.focus = Pane::Preview;
    s.fullscreen = true;
    let (text, [red, blue]) = render(&mut s, 100, 30, true);
    assert!(text.contains("a red bicycle") && text.contains("a blue bicycle"));
    // Generation #2 (blue) on the left half, #1 (red) on the right, each image's coloured
    // half within its own side.
    assert!(!red.is_empty() && !blue.is_empty(), "both images drawn");
    assert!(blue.iter().all(|&x| x < 50), "{blue:?}");
    assert!(red.iter().all(|&x| x >= 50), "{red:?}");
    insta::assert_snapshot!("compare_images_100x30", text);
    // Before the images are decoded: the file being loaded, the parameters already there.
    let loading = screen(&mut s, 100, 30, false);
    assert!(loading.contains("loading 00000-"), "{loading}");
}

#[test]
fn status_bar_shows_device_memory_and_loaded_models() {
    let mut s = compared();
    let ev = |s: &mut AppState, e: Event| {
        update(s, Action::Event(e));
    };
    ev(
        &mut s,
        Event::Model {
            name: "tiny".into(),
            status: None,
        },
    );
    ev(
        &mut s,
        Event::Memory(Memory {
            used: 412 << 20,
            total: 31 << 30 | 300 << 20,
            gpu: false,
        }),
    );
    let cpu = screen(&mut s, 100, 30, true);
    let last = |t: &str| t.lines().last().unwrap().to_string();
    insta::assert_snapshot!("status_cpu", last(&cpu));
    s.device = "CUDA(0)".into();
    ev(
        &mut s,
        Event::Memory(Memory {
            used: 3_300 << 20,
            total: 80 << 30,
            gpu: true,
        }),
    );
    ev(
        &mut s,
        Event::Model {
            name: "sdxl".into(),
            status: Some("loading".into()),
        },
    );
    insta::assert_snapshot!("status_gpu", last(&screen(&mut s, 100, 30, true)));
}
