//! The TUI runtime: terminal guard, one event channel, effects handed to workers, and a
//! throttled render that only runs when something changed.
mod audio;
mod clip;
mod compare;
pub mod generate;
mod latest;
mod memory;
pub mod terminal;
pub mod workers;

use crate::config::{self, DeviceChoice, KeyBinding, KeySection, Keymap, Theme};
use crate::engine::store;
use crate::state::{self, Action, AppState, Effect, Event, GenerateRequest, Pane, TextKey};
use crate::ui::{self, Ctx, PreviewImage};
use crossterm::event::{
    self, Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton,
    MouseEventKind,
};
use ratatui::layout::Rect;
use ratatui_image::picker::Picker;
use ratatui_image::thread::{ResizeRequest, ResizeResponse, ThreadProtocol};
use std::path::PathBuf;
use std::sync::mpsc::{self, Sender};
use std::time::{Duration, Instant};

/// Everything that reaches the UI thread, on one channel.
pub enum Msg {
    Input(TermEvent),
    InputClosed,
    Action(Action),
    Decoded {
        path: PathBuf,
        image: Result<image::DynamicImage, String>,
    },
    Resized(Result<ResizeResponse, String>),
}

/// Runs Stable Diffusion requests for the generate pane. The runner reports progress and
/// results as `Event::Generate*` on `events`.
pub trait GenerateRunner: Send {
    fn start(&mut self, request: GenerateRequest, events: Sender<Msg>);
    fn cancel(&mut self, id: u64);
}

/// The runner of a build without the Stable Diffusion engine: every request fails clearly.
pub struct SdUnavailable;

pub const SD_UNAVAILABLE: &str = "Stable Diffusion is not available in this build";

impl GenerateRunner for SdUnavailable {
    fn start(&mut self, request: GenerateRequest, events: Sender<Msg>) {
        let _ = events.send(Msg::Action(Action::Event(Event::GenerateFailed {
            id: request.id,
            error: SD_UNAVAILABLE.to_string(),
        })));
    }
    fn cancel(&mut self, _id: u64) {}
}

/// Maps a key to what the reducer takes: raw text keys while a field has the focus, else
/// the focused pane's binding, then `list`, then `global`.
pub fn key_action(state: &AppState, keymap: &Keymap, key: KeyEvent) -> Option<Action> {
    if state.wants_text() {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        let k = match key.code {
            KeyCode::Char('c') if ctrl => TextKey::Esc,
            KeyCode::Char('j') if ctrl => TextKey::Newline,
            KeyCode::Char(c) if !ctrl => TextKey::Char(c),
            KeyCode::Enter if alt => TextKey::Newline,
            KeyCode::Enter => TextKey::Enter,
            KeyCode::Backspace => TextKey::Backspace,
            KeyCode::Delete => TextKey::Delete,
            KeyCode::Left => TextKey::Left,
            KeyCode::Right => TextKey::Right,
            KeyCode::Up => TextKey::Up,
            KeyCode::Down => TextKey::Down,
            KeyCode::Home => TextKey::Home,
            KeyCode::End => TextKey::End,
            KeyCode::Esc => TextKey::Esc,
            KeyCode::Tab => TextKey::Tab,
            _ => return None,
        };
        return Some(Action::Text(k));
    }
    let mut modifiers = key.modifiers;
    if matches!(key.code, KeyCode::Char(_) | KeyCode::BackTab) {
        // "G" arrives as shift-G; the keymap writes it "G".
        modifiers -= KeyModifiers::SHIFT;
    }
    let binding = KeyBinding {
        code: key.code,
        modifiers,
    };
    let pane = KeySection::of(state.focus);
    let sections: &[KeySection] = if state.focus == Pane::Preview {
        &[pane]
    } else {
        &[pane, KeySection::List]
    };
    let name = sections
        .iter()
        .find_map(|s| keymap.sections.get(s).and_then(|m| m.get(&binding)))
        .map(String::as_str)
        .or_else(|| keymap.action(KeySection::Global, binding))?;
    state::Cmd::from_name(name).map(Action::Cmd)
}

struct Runtime {
    config: config::Config,
    keymap: Keymap,
    theme: Theme,
    tx: Sender<Msg>,
    queue: workers::JobQueue,
    clip: Sender<clip::ClipWork>,
    player: Sender<audio::PlayCmd>,
    sd: Box<dyn GenerateRunner>,
    compare: compare::CompareImages,
    picker: Option<Picker>,
    resize_tx: Sender<ResizeRequest>,
    preview: Option<PreviewImage>,
    /// Decodes the preview image; only the newest request runs.
    decode: latest::Latest<PathBuf>,
}

impl Runtime {
    fn effect(&mut self, state: &mut AppState, effect: Effect) {
        match effect {
            Effect::Quit => {}
            Effect::Transcribe(paths) => self.queue.transcribe(paths),
            Effect::RetryJob(id) => self.queue.retry(id),
            Effect::CancelJob(id) => self.queue.cancel(id),
            Effect::Reprioritize(id, p) => self.queue.reprioritize(id, p),
            Effect::SaveTranscript {
                media,
                transcript,
                formats,
            } => workers::save_transcript(
                media,
                transcript,
                formats,
                self.queue.clone(),
                &self.config,
                self.tx.clone(),
            ),
            Effect::Play { path, start, end } => {
                let _ = self.player.send(audio::PlayCmd::Play { path, start, end });
            }
            Effect::PlayTurns { path, turns } => {
                let _ = self.player.send(audio::PlayCmd::PlayTurns { path, turns });
            }
            Effect::Diarize(path) => self.queue.diarize(path),
            Effect::StopPlayback => {
                let _ = self.player.send(audio::PlayCmd::Stop);
            }
            Effect::TagImages { paths, label_set } => {
                let _ = self.clip.send(clip::ClipWork::Tag { paths, label_set });
            }
            Effect::WriteSidecars(writes) => {
                workers::write_sidecars(writes, self.queue.clone(), self.tx.clone())
            }
            Effect::SearchIndex(q) => {
                let _ = self.clip.send(clip::ClipWork::Search(q));
            }
            Effect::Similar(p) => {
                let _ = self.clip.send(clip::ClipWork::Similar(p));
            }
            Effect::ShowImage(path) => {
                self.preview = None;
                if let (Some(path), Some(_)) = (path, &self.picker) {
                    self.decode.request(path);
                }
            }
            Effect::Generate(req) => self.sd.start(req, self.tx.clone()),
            Effect::CancelGenerate(id) => self.sd.cancel(id),
            Effect::LoadTheme(name) => {
                let user = config::config_dir().map(|d| d.join("themes"));
                match Theme::load(&name, user.as_deref()) {
                    Ok(t) => {
                        self.theme = t;
                        let _ = state::update(state, Action::Event(Event::ThemeChanged(name)));
                    }
                    Err(e) => state.error(e.to_string()),
                }
            }
        }
    }

    /// Handles one message; true when the screen must be redrawn.
    fn handle(&mut self, state: &mut AppState, msg: Msg, area: Rect) -> bool {
        let action = match msg {
            Msg::InputClosed => Some(Action::Cmd(state::Cmd::Quit)),
            Msg::Input(TermEvent::Key(key)) if key.kind != KeyEventKind::Release => {
                key_action(state, &self.keymap, key)
            }
            Msg::Input(TermEvent::Mouse(m)) if !state.wants_text() => match m.kind {
                MouseEventKind::Down(MouseButton::Left) => ui::hit(area, state, m.column, m.row)
                    .map(|(pane, row, height)| Action::Click { pane, row, height }),
                MouseEventKind::ScrollDown | MouseEventKind::ScrollUp => {
                    ui::hit(area, state, m.column, m.row).map(|(pane, _, _)| Action::Scroll {
                        pane,
                        down: m.kind == MouseEventKind::ScrollDown,
                    })
                }
                _ => None,
            },
            Msg::Input(TermEvent::Resize(w, h)) => Some(Action::Resize(w, h)),
            Msg::Input(_) => None,
            Msg::Action(a) => Some(a),
            Msg::Decoded { path, image } => {
                match (image, &self.picker) {
                    (Ok(img), Some(picker)) if state.preview.as_ref() == Some(&path) => {
                        let proto = picker.new_resize_protocol(img);
                        self.preview = Some(PreviewImage {
                            path,
                            protocol: ThreadProtocol::new(self.resize_tx.clone(), Some(proto)),
                        });
                    }
                    (Err(e), _) => state.error(e),
                    _ => {}
                }
                return true;
            }
            Msg::Resized(r) => {
                match (r, self.preview.as_mut()) {
                    (Ok(done), Some(p)) => {
                        p.protocol.update_resized_protocol(done);
                    }
                    (Err(e), _) => state.error(format!("preview: {e}")),
                    _ => {}
                }
                return true;
            }
        };
        let Some(action) = action else { return false };
        let is_tick = action == Action::Tick;
        for effect in state::update(state, action) {
            self.effect(state, effect);
        }
        !is_tick || state.transcript.playing.is_some() || state.library.overall().is_some()
    }
}

/// Runs the TUI until the user quits.
pub fn run(
    loaded: config::Loaded,
    dirs: Vec<PathBuf>,
    device_label: String,
    device: DeviceChoice,
) -> anyhow::Result<()> {
    let sd = Box::new(generate::SdRunner::new(&loaded.config, device));
    run_with(loaded, dirs, device_label, device, sd)
}

/// Runs the TUI with `sd` as the generate pane's runner.
pub fn run_with(
    loaded: config::Loaded,
    dirs: Vec<PathBuf>,
    device_label: String,
    device: DeviceChoice,
    sd: Box<dyn GenerateRunner>,
) -> anyhow::Result<()> {
    let config::Loaded {
        config,
        keymap,
        theme,
        errors,
        ..
    } = loaded;
    let user_themes = config::config_dir().map(|d| d.join("themes"));
    let entropy = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut state = AppState::new(
        device_label,
        Theme::available(user_themes.as_deref()),
        theme.name.clone(),
        entropy,
    );
    for e in errors {
        state.error(format!("config: {e}"));
    }
    state
        .generate
        .apply_defaults(&generate::defaults(&config.diffusion));
    let frame_budget = Duration::from_millis(1000 / u64::from(config.ui.max_fps.clamp(1, 240)));
    let models_dir = store::models_dir(&config.models_dir);

    let guard = terminal::TerminalGuard::enter(config.ui.mouse)?;
    let mut term =
        ratatui::Terminal::new(ratatui::backend::CrosstermBackend::new(std::io::stdout()))?;
    let size = term.size()?;
    state.size = (size.width, size.height);
    // The first frame comes before anything slow.
    term.draw(|f| {
        ui::render(
            &state,
            &mut Ctx {
                theme: &theme,
                keymap: &keymap,
                image: None,
                compare: [None, None],
            },
            f,
        )
    })?;
    // The protocol query reads stdin, so it runs before the input thread starts.
    let (picker, how) = terminal::image_picker(config.ui.image_protocol);
    tracing::info!(
        "image protocol: {}",
        terminal::describe_protocol(&picker, how)
    );

    let (tx, rx) = mpsc::channel::<Msg>();
    memory::spawn_memory_monitor(device, tx.clone(), Duration::from_secs(2));
    {
        let tx = tx.clone();
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
    }
    {
        let tx = tx.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(250));
            if tx.send(Msg::Action(Action::Tick)).is_err() {
                break;
            }
        });
    }
    let (resize_tx, resize_rx) = mpsc::channel::<ResizeRequest>();
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for req in resize_rx {
                if tx
                    .send(Msg::Resized(req.resize_encode().map_err(|e| e.to_string())))
                    .is_err()
                {
                    break;
                }
            }
        });
    }
    let engine = workers::Engine::new(device, models_dir);
    let decoded = tx.clone();
    let decode = latest::Latest::spawn("atelier-preview-decode", move |path: PathBuf| {
        let image = image::ImageReader::open(&path)
            .map_err(|e| e.to_string())
            .and_then(|r| r.with_guessed_format().map_err(|e| e.to_string()))
            .and_then(|r| r.decode().map_err(|e| e.to_string()))
            .map_err(|e| format!("{}: {e}", path.display()));
        let _ = decoded.send(Msg::Decoded { path, image });
    })?;
    let mut rt = Runtime {
        queue: workers::JobQueue::open(engine.clone(), config.clone(), tx.clone()),
        clip: clip::spawn_clip(engine, config.clone(), tx.clone()),
        player: audio::spawn(tx.clone()),
        config,
        keymap,
        theme,
        tx: tx.clone(),
        sd,
        compare: compare::CompareImages::new(tx.clone()),
        picker: Some(picker),
        resize_tx,
        preview: None,
        decode,
    };
    let _ = tx.send(Msg::Action(Action::Event(Event::LabelSets(
        clip::label_sets(),
    ))));
    workers::scan(dirs, tx.clone());

    let mut dirty = true;
    let mut last_draw = Instant::now() - frame_budget;
    while !state.quit {
        if dirty && last_draw.elapsed() >= frame_budget {
            let area = Rect::new(0, 0, state.size.0, state.size.1);
            let _ = area;
            term.draw(|f| {
                let mut ctx = Ctx {
                    theme: &rt.theme,
                    keymap: &rt.keymap,
                    image: rt.preview.as_mut(),
                    compare: rt.compare.images(),
                };
                ui::render(&state, &mut ctx, f)
            })?;
            last_draw = Instant::now();
            dirty = false;
        }
        let timeout = if dirty {
            frame_budget.saturating_sub(last_draw.elapsed())
        } else {
            Duration::from_secs(1)
        };
        let first = match rx.recv_timeout(timeout) {
            Ok(m) => Some(m),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        // Drain everything pending before the next frame.
        for msg in first.into_iter().chain(rx.try_iter()) {
            let area = Rect::new(0, 0, state.size.0, state.size.1);
            dirty |= rt.handle(&mut state, msg, area);
            if state.quit {
                break;
            }
        }
        dirty |= rt.compare.sync(&state, rt.picker.as_ref());
    }
    drop(term);
    drop(guard);
    // After the terminal is back: a running job stops at its next check and is queued again.
    rt.queue.shutdown();
    Ok(())
}
