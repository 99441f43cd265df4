//! The generate pane's views (ratatui TestBackend + insta): the compare view with both images
//! (halfblocks, so the snapshot shows them as coloured cells) and their parameters, and the
//! status bar's device memory and loaded models. States are built through the reducer with
//! fixed paths. The runner (`app::generate`) on a tiny random-weight SD 1.5 and ControlNet
//! exported in this run: every parameter reaching the pipeline, the PNG, live previews, errors,
//! cancel and the warm model. The keyboard flow end to end (tmux) is in tui_e2e.rs.
mod common;

use atelier::app::generate::{prepare, SdRunner};
use atelier::app::{GenerateRunner, Msg};
use atelier::config::{DeviceChoice, DiffusionConfig};
use atelier::config::{Keymap, Theme};
use atelier::engine::diffusion::scheduler::SchedulerKind;
use atelier::state::GenerateRequest;
use atelier::state::{update, Action, AppState, Cmd, Event, Memory, Pane, TextKey};
use atelier::ui::{self, Ctx, PreviewImage};
use ratatui::backend::TestBackend;
use ratatui::style::Color;
use ratatui::Terminal;
use ratatui_image::picker::Picker;
use ratatui_image::thread::{ResizeRequest, ThreadProtocol};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

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

// ---- the runner, on a tiny model ----

/// A store with the tiny SD 1.5 ("tiny") and its ControlNet ("cn"), exported once.
fn store() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let models = dir.path().join("models");
        std::thread::scope(|s| {
            for (cmd, name) in [("import-sd", "tiny"), ("import-controlnet", "cn")] {
                let models = models.clone();
                s.spawn(move || {
                    common::export_tool(&[
                        cmd,
                        "--random-init",
                        "tiny-sd15",
                        "--models",
                        models.to_str().unwrap(),
                        "--name",
                        name,
                        "--no-verify",
                    ]);
                });
            }
        });
        std::fs::create_dir_all(models.join("lora")).unwrap();
        dir
    })
    .path()
}

fn models() -> PathBuf {
    store().join("models")
}

fn request(id: u64) -> GenerateRequest {
    GenerateRequest {
        id,
        prompt: "a red bicycle".into(),
        negative: String::new(),
        steps: 2,
        guidance: 7.5,
        scheduler: "euler".into(),
        width: 64,
        height: 64,
        seed: 42,
        variation_seed: None,
        variation_strength: 0.0,
        loras: vec![],
        model: "tiny".into(),
        init_image: None,
        strength: 0.75,
        mask: None,
        controlnet: None,
    }
}

#[test]
fn every_pane_parameter_reaches_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let lora_dir = dir.path().join("loras");
    std::fs::create_dir_all(&lora_dir).unwrap();
    for name in ["ink", "film"] {
        std::fs::write(lora_dir.join(format!("{name}.safetensors")), b"").unwrap();
    }
    // Init and control images at another size than asked: resized, with a note.
    let init = dir.path().join("init.png");
    image::RgbImage::from_pixel(32, 32, image::Rgb([255, 0, 0]))
        .save(&init)
        .unwrap();
    let mask = dir.path().join("mask.png");
    image::GrayImage::from_pixel(64, 64, image::Luma([255]))
        .save(&mask)
        .unwrap();
    let control = dir.path().join("edges.png");
    image::RgbImage::from_pixel(64, 64, image::Rgb([0, 0, 255]))
        .save(&control)
        .unwrap();
    let config = DiffusionConfig {
        lora_dir: lora_dir.display().to_string(),
        ..Default::default()
    };
    let req = GenerateRequest {
        prompt: "a red bicycle <lora:film:0.3>".into(),
        negative: "blurry".into(),
        steps: 7,
        guidance: 7.3,
        scheduler: "dpmpp-2m-karras".into(),
        width: 64,
        height: 64,
        seed: 1234,
        variation_seed: Some(99),
        variation_strength: 0.3,
        loras: vec![("ink".into(), 0.6)],
        init_image: Some(init.clone()),
        strength: 0.6,
        mask: Some(mask),
        controlnet: Some(("cn".into(), control)),
        ..request(1)
    };
    let mut notes = Vec::new();
    let (spec, r, model) = prepare(&models(), &config, &req, &mut |n| notes.push(n)).unwrap();
    assert_eq!(model, "tiny");
    assert_eq!(spec.model.name(), "tiny");
    assert_eq!(spec.controlnet.as_ref().map(|c| c.name()), Some("cn"));
    assert_eq!(r.prompt, "a red bicycle <lora:film:0.3>");
    assert_eq!(r.negative, "blurry");
    assert_eq!((r.steps, r.width, r.height, r.batch), (7, 64, 64, 1));
    assert_eq!(r.guidance, 7.3, "the typed number, not its f32 neighbour");
    assert_eq!(r.scheduler, SchedulerKind::DpmPp2MKarras);
    assert_eq!(r.seed, 1234);
    assert_eq!(r.variation, Some((99, 0.3)));
    assert_eq!(
        r.loras,
        vec![
            (lora_dir.join("ink.safetensors"), 0.6),
            (lora_dir.join("film.safetensors"), 0.3)
        ],
        "the pane's LoRAs, then the prompt's tags"
    );
    let i = r.init.as_ref().unwrap();
    assert_eq!(i.strength, 0.6);
    assert_eq!(i.pixels.size(), [1, 3, 64, 64]);
    assert_eq!(i.mask.as_ref().unwrap().size(), [1, 1, 64, 64]);
    let c = r.control.as_ref().unwrap();
    assert_eq!(c.image.size(), [1, 3, 64, 64]);
    assert!(r.preview_every > 0, "live previews are asked for");
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("32x32 resized to 64x64"), "{notes:?}");
}

/// Collects the runner's events until the generation `id` ends.
fn until_done(rx: &mpsc::Receiver<Msg>, id: u64) -> Vec<Event> {
    let mut out = Vec::new();
    loop {
        let msg = rx
            .recv_timeout(Duration::from_secs(600))
            .expect("the runner reports the end of every generation");
        let Msg::Action(Action::Event(ev)) = msg else {
            continue;
        };
        let end = matches!(&ev, Event::GenerateDone { id: i, .. } | Event::GenerateFailed { id: i, .. } | Event::GenerateCancelled { id: i } if *i == id);
        out.push(ev);
        if end {
            return out;
        }
    }
}

fn preview_of(e: &Event) -> Option<PathBuf> {
    match e {
        Event::GenerateProgress {
            preview: Some(p), ..
        } => Some(p.clone()),
        _ => None,
    }
}

fn failure(events: &[Event]) -> String {
    match events.last() {
        Some(Event::GenerateFailed { error, .. }) => error.clone(),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn the_runner_writes_the_png_reports_errors_cancels_and_keeps_the_model_warm() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let config = DiffusionConfig {
        output_dir: out.display().to_string(),
        ..Default::default()
    };
    let mut sd = SdRunner::with_models(models(), config, DeviceChoice::Cpu);
    let (tx, rx) = mpsc::channel();

    // Bad input fails the generation with a message naming the problem.
    let garbage = dir.path().join("garbage.png");
    std::fs::write(&garbage, b"not a png").unwrap();
    let mask = dir.path().join("mask.png");
    image::GrayImage::new(64, 64).save(&mask).unwrap();
    let bad: Vec<(GenerateRequest, String)> = vec![
        (
            GenerateRequest {
                model: "nosuch".into(),
                ..request(1)
            },
            "'nosuch' is not installed".into(),
        ),
        (
            GenerateRequest {
                loras: vec![("ghost".into(), 1.0)],
                ..request(2)
            },
            "unknown LoRA 'ghost'".into(),
        ),
        (
            GenerateRequest {
                init_image: Some(garbage.clone()),
                ..request(3)
            },
            format!("{}: cannot read the init image", garbage.display()),
        ),
        (
            GenerateRequest {
                mask: Some(mask),
                ..request(4)
            },
            "a mask needs an init image".into(),
        ),
    ];
    for (req, want) in bad {
        let id = req.id;
        sd.start(req, tx.clone());
        let err = failure(&until_done(&rx, id));
        assert!(err.contains(&want), "{err:?} lacks {want:?}");
    }
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());

    // A generation: the model loads, steps and a live preview arrive, the PNG is written.
    sd.start(request(5), tx.clone());
    let events = until_done(&rx, 5);
    let loading = Event::Model {
        name: "tiny".into(),
        status: Some("loading".into()),
    };
    assert!(events.contains(&loading), "{events:?}");
    assert!(events.contains(&Event::Model {
        name: "tiny".into(),
        status: None
    }));
    let steps: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            Event::GenerateProgress { step, total: 2, .. } => Some(*step),
            _ => None,
        })
        .collect();
    assert!(steps.contains(&1) && steps.contains(&2), "{events:?}");
    let done_preview = events
        .iter()
        .find_map(preview_of)
        .expect("a live preview during sampling");
    let Some(Event::GenerateDone { image, .. }) = events.last() else {
        panic!("{events:?}")
    };
    assert_eq!(
        image,
        &std::path::absolute(out.join("00000-42.png")).unwrap()
    );
    let text = atelier::output::png_meta::read_parameters(image)
        .unwrap()
        .unwrap();
    assert!(text.starts_with("a red bicycle\n"), "{text}");
    assert!(
        text.contains("Steps: 2, Sampler: Euler,") && text.contains("Seed: 42,"),
        "{text}"
    );

    // Cancelled once its first preview is shown: it stops between two steps, keeps its last
    // preview and writes no image; the model stays loaded (no "loading" again).
    sd.start(
        GenerateRequest {
            steps: 500,
            ..request(6)
        },
        tx.clone(),
    );
    let mut events = Vec::new();
    let preview = loop {
        let Msg::Action(Action::Event(ev)) = rx.recv_timeout(Duration::from_secs(600)).unwrap()
        else {
            continue;
        };
        let p = preview_of(&ev);
        events.push(ev);
        if let Some(p) = p {
            break p;
        }
    };
    sd.cancel(6);
    events.extend(until_done(&rx, 6));
    assert!(
        matches!(events.last(), Some(Event::GenerateCancelled { id: 6 })),
        "expected a cancellation, got {:?}",
        events.last()
    );
    assert!(!events.contains(&loading), "{events:?}");
    let last_step = events
        .iter()
        .filter_map(|e| match e {
            Event::GenerateProgress { step, .. } => Some(*step),
            _ => None,
        })
        .max();
    assert!(last_step < Some(500), "stopped early: {last_step:?}");
    assert_eq!(
        image::open(&preview).unwrap().width(),
        64,
        "the preview is shown at the image's size"
    );
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1, "no image");
    assert!(
        !done_preview.exists(),
        "a done image's previews go when the next generation starts"
    );
    sd.start(request(7), tx.clone());
    let events = until_done(&rx, 7);
    assert!(
        !events.contains(&loading),
        "the model was kept warm: {events:?}"
    );
    let Some(Event::GenerateDone { image: again, .. }) = events.last() else {
        panic!("{events:?}")
    };
    assert_eq!(again.file_name().unwrap(), "00001-42.png");
    let (a, b) = (image::open(image).unwrap(), image::open(again).unwrap());
    assert!(a.to_rgb8() == b.to_rgb8(), "same parameters, same pixels");
}
