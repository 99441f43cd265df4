//! Application state and the pure reducer `update(state, action) -> effects`.
//! No tokio, no tch, no I/O: everything here is testable without a terminal or a model.
mod action;
pub mod edit;
pub mod generate;
pub mod library;
mod queue;
pub mod tags;
pub mod transcript;

pub use action::{action_description, Cmd, ACTIONS};
pub use edit::{EditOutcome, TextEdit, TextKey};
pub use generate::{Field, GenStatus, GeneratePane, GenerateRequest, Generation};
pub use library::{Item, JobState, JobUpdate, Library, MediaKind};
pub use tags::{TagItem, TagsPane};
pub use transcript::{speakers_of, turns_of, Doc, TranscriptPane};

use crate::domain::{JobId, JobKind};
use crate::transcript::{Segment, Transcript};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pane {
    Queue,
    Transcript,
    Tags,
    Generate,
    Preview,
}

impl Pane {
    pub const ALL: &[Pane] = &[
        Pane::Queue,
        Pane::Transcript,
        Pane::Tags,
        Pane::Generate,
        Pane::Preview,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Pane::Queue => "Library",
            Pane::Transcript => "Transcript",
            Pane::Tags => "Tags",
            Pane::Generate => "Generate",
            Pane::Preview => "Preview",
        }
    }
}

/// What a one-line prompt is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptKind {
    QueueSearch,
    TranscriptSearch,
    EditSegment,
    RenameSpeaker,
    Export,
    TagSearch,
    CustomTag,
    Field(Field),
}

impl PromptKind {
    pub fn title(self) -> &'static str {
        match self {
            PromptKind::QueueSearch | PromptKind::TranscriptSearch => "search",
            PromptKind::EditSegment => "edit segment (enter saves the edit, esc cancels)",
            PromptKind::RenameSpeaker => {
                "rename speaker (enter renames every turn and rewrites the files, esc cancels)"
            }
            PromptKind::Export => "export formats (txt, srt, vtt, tsv, json, all)",
            PromptKind::TagSearch => "search the index",
            PromptKind::CustomTag => "custom tag for the selection",
            PromptKind::Field(f) => f.label(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Normal,
    Help { scroll: usize },
    Palette { edit: TextEdit, selected: usize },
    Prompt { kind: PromptKind, edit: TextEdit },
    ErrorDetail,
}

/// A message for the status bar.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub text: String,
    pub error: bool,
}

/// What happened outside the reducer: jobs, files, playback, the SD runner.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Files found in the opened folders; a transcript already next to the audio comes along.
    Found(Vec<Found>),
    /// Jobs of the durable queue that changed (or, at start, all of them).
    Jobs(Vec<JobUpdate>),
    Segment {
        path: PathBuf,
        segment: Segment,
    },
    TranscriptDone {
        path: PathBuf,
        transcript: Transcript,
    },
    Saved {
        path: PathBuf,
        files: Vec<PathBuf>,
    },
    LabelSets(Vec<String>),
    TagScores {
        path: PathBuf,
        scores: Vec<(String, f32)>,
    },
    TagFailed {
        path: PathBuf,
        error: String,
    },
    TaggingDone,
    SearchResults {
        title: String,
        hits: Vec<(PathBuf, f32)>,
    },
    SidecarsWritten(usize),
    PlaybackPosition {
        path: PathBuf,
        seconds: f64,
    },
    PlaybackStopped,
    AudioUnavailable(String),
    GenerateProgress {
        id: u64,
        step: u32,
        total: u32,
        preview: Option<PathBuf>,
    },
    GenerateDone {
        id: u64,
        image: PathBuf,
    },
    GenerateFailed {
        id: u64,
        error: String,
    },
    /// The generation was cancelled (by the user or a newer request).
    GenerateCancelled {
        id: u64,
    },
    /// A model's state: None when loaded, else what is happening ("loading", an error).
    Model {
        name: String,
        status: Option<String>,
    },
    /// Memory in use and in total: the GPU's on CUDA, the process's RSS and the RAM on the CPU.
    Memory(Memory),
    ThemeChanged(String),
    Info(String),
    Error(String),
}

/// The status bar's memory figure, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub used: u64,
    pub total: u64,
    /// True for GPU memory, false for the process's RSS against the machine's RAM.
    pub gpu: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub path: PathBuf,
    pub kind: MediaKind,
    pub transcript: Option<Transcript>,
    /// Tags already in the image's sidecar.
    pub tags: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Cmd(Cmd),
    /// A key while a text field, the palette or the help has the focus.
    Text(TextKey),
    /// A click inside a pane: `row` is the line within its list (None: outside the list),
    /// `height` the list's height.
    Click {
        pane: Pane,
        row: Option<usize>,
        height: usize,
    },
    Scroll {
        pane: Pane,
        down: bool,
    },
    Resize(u16, u16),
    Tick,
    Event(Event),
}

/// What the runtime must do after an update.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Quit,
    /// Queue transcriptions (interactive priority).
    Transcribe(Vec<PathBuf>),
    RetryJob(JobId),
    CancelJob(JobId),
    Reprioritize(JobId, i32),
    /// Rewrite the output files of `media` from `transcript` (`formats` empty: the configured ones).
    SaveTranscript {
        media: PathBuf,
        transcript: Transcript,
        formats: Vec<String>,
    },
    Play {
        path: PathBuf,
        start: f64,
        end: f64,
    },
    /// Play these (start, end) spans of `path` one after another (a speaker's turns).
    PlayTurns {
        path: PathBuf,
        turns: Vec<(f64, f64)>,
    },
    /// Queue `path`'s transcription again, diarized (interactive priority).
    Diarize(PathBuf),
    StopPlayback,
    TagImages {
        paths: Vec<PathBuf>,
        label_set: String,
    },
    /// (image, tags); None removes the sidecar (undo of a first apply).
    WriteSidecars(Vec<(PathBuf, Option<Vec<String>>)>),
    SearchIndex(String),
    Similar(PathBuf),
    ShowImage(Option<PathBuf>),
    Generate(GenerateRequest),
    CancelGenerate(u64),
    LoadTheme(String),
}

pub struct AppState {
    pub focus: Pane,
    pub mode: Mode,
    pub size: (u16, u16),
    pub fullscreen: bool,
    pub quit: bool,
    pub device: String,
    /// (model, None when loaded or what is happening to it).
    pub models: Vec<(String, Option<String>)>,
    /// The latest memory sample (none until the first arrives).
    pub memory: Option<Memory>,
    pub themes: Vec<String>,
    pub theme: String,
    pub status: Option<Status>,
    pub last_error: Option<String>,
    pub audio_warned: bool,
    pub library: Library,
    pub transcript: TranscriptPane,
    pub tags: TagsPane,
    pub generate: GeneratePane,
    /// The image the preview shows.
    pub preview: Option<PathBuf>,
    pub ticks: u64,
}

impl AppState {
    pub fn new(device: String, themes: Vec<String>, theme: String, entropy: u64) -> Self {
        AppState {
            focus: Pane::Queue,
            mode: Mode::Normal,
            size: (80, 24),
            fullscreen: false,
            quit: false,
            device,
            models: Vec::new(),
            memory: None,
            themes,
            theme,
            status: None,
            last_error: None,
            audio_warned: false,
            library: Library::default(),
            transcript: TranscriptPane::default(),
            tags: TagsPane::default(),
            generate: GeneratePane::new(entropy),
            preview: None,
            ticks: 0,
        }
    }

    /// True while keys go to a text field (the app sends `Action::Text` then).
    pub fn wants_text(&self) -> bool {
        !matches!(self.mode, Mode::Normal)
    }

    pub fn info(&mut self, text: impl Into<String>) {
        self.status = Some(Status {
            text: text.into(),
            error: false,
        });
    }

    pub fn error(&mut self, text: impl Into<String>) {
        let text = text.into();
        self.last_error = Some(text.clone());
        self.status = Some(Status { text, error: true });
    }

    fn page(&self) -> isize {
        (self.size.1 as isize / 2 - 3).max(1)
    }

    /// Commands the palette shows for `filter`, best first.
    pub fn palette_matches(filter: &str) -> Vec<Cmd> {
        let f = filter.to_lowercase();
        Cmd::ALL
            .iter()
            .copied()
            .filter(|c| {
                f.is_empty() || c.name().contains(&f) || c.description().to_lowercase().contains(&f)
            })
            .collect()
    }

    /// The image the preview should show for the focused pane's selection.
    fn preview_target(&self) -> Option<PathBuf> {
        match self.focus {
            Pane::Tags => self.tags.current().map(|t| t.path.clone()),
            Pane::Generate => {
                let g = self.generate.history.get(self.generate.history_cursor)?;
                match &g.status {
                    GenStatus::Done(p) => Some(p.clone()),
                    _ => g.preview.clone(),
                }
            }
            Pane::Queue => self
                .library
                .current()
                .filter(|i| i.kind == MediaKind::Image)
                .map(|i| i.path.clone())
                .or_else(|| self.preview.clone()),
            _ => self.preview.clone(),
        }
    }

    fn sync_views(&mut self, effects: &mut Vec<Effect>) {
        if self.focus == Pane::Queue {
            if let Some(it) = self.library.current() {
                if it.kind == MediaKind::Audio {
                    let p = it.path.clone();
                    self.transcript.show(p);
                }
            }
        }
        let target = self.preview_target();
        if target != self.preview {
            self.preview = target.clone();
            effects.push(Effect::ShowImage(target));
        }
    }
}

/// The first visible row of a list whose cursor is `cursor` in a view of `height` rows:
/// the view moves a page at a time, so a click maps to a row without any hidden state.
pub fn list_offset(cursor: usize, height: usize) -> usize {
    cursor.checked_div(height).map_or(0, |page| page * height)
}

fn clamp_move(cursor: usize, delta: isize, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        (cursor as isize + delta).clamp(0, len as isize - 1) as usize
    }
}

/// The pure reducer.
pub fn update(state: &mut AppState, action: Action) -> Vec<Effect> {
    let mut effects = Vec::new();
    match action {
        Action::Cmd(cmd) => command(state, cmd, &mut effects),
        Action::Text(key) => text_key(state, key, &mut effects),
        Action::Click { pane, row, height } => {
            state.focus = pane;
            if let Some(row) = row {
                click_row(state, pane, row, height);
            }
        }
        Action::Scroll { pane, down } => {
            let d = if down { 3 } else { -3 };
            scroll(state, pane, d);
        }
        Action::Resize(w, h) => state.size = (w, h),
        Action::Tick => state.ticks += 1,
        Action::Event(ev) => event(state, ev, &mut effects),
    }
    if !state.quit {
        state.sync_views(&mut effects);
    }
    effects
}

fn click_row(state: &mut AppState, pane: Pane, row: usize, height: usize) {
    match pane {
        Pane::Queue => {
            let idx = list_offset(state.library.cursor, height) + row;
            if idx < state.library.visible().len() {
                state.library.cursor = idx;
            }
        }
        Pane::Transcript => {
            let t = &mut state.transcript;
            let idx = list_offset(t.cursor_row(), height) + row;
            if let Some(&seg) = t.rows().get(idx) {
                t.cursor = seg;
            }
        }
        Pane::Tags => {
            let idx = list_offset(state.tags.cursor, height) + row;
            if idx < state.tags.shown().len() {
                state.tags.cursor = idx;
                state.tags.tag_cursor = 0;
            }
        }
        Pane::Generate => {
            if row < Field::ALL.len() {
                state.generate.field = row;
            }
        }
        Pane::Preview => {}
    }
}

fn scroll(state: &mut AppState, pane: Pane, d: isize) {
    match pane {
        Pane::Queue => {
            let n = state.library.visible().len();
            state.library.cursor = clamp_move(state.library.cursor, d, n);
        }
        Pane::Transcript => state.transcript.move_by(d),
        Pane::Tags => state.tags.move_by(d),
        Pane::Generate => {
            state.generate.field = clamp_move(state.generate.field, d.signum(), Field::ALL.len())
        }
        Pane::Preview => {}
    }
}

fn open_prompt(state: &mut AppState, kind: PromptKind, text: &str) {
    let multiline = matches!(kind, PromptKind::Field(f) if f.multiline());
    state.mode = Mode::Prompt {
        kind,
        edit: TextEdit::new(text, multiline),
    };
}

fn command(state: &mut AppState, cmd: Cmd, effects: &mut Vec<Effect>) {
    // Global commands first.
    match cmd {
        Cmd::Quit => {
            state.quit = true;
            effects.push(Effect::Quit);
            return;
        }
        Cmd::Help => {
            state.mode = Mode::Help { scroll: 0 };
            return;
        }
        Cmd::Palette => {
            state.mode = Mode::Palette {
                edit: TextEdit::default(),
                selected: 0,
            };
            return;
        }
        Cmd::FocusNext | Cmd::FocusPrev => {
            let i = Pane::ALL
                .iter()
                .position(|&p| p == state.focus)
                .unwrap_or(0) as isize;
            let d = if cmd == Cmd::FocusNext { 1 } else { -1 };
            state.focus = Pane::ALL[(i + d).rem_euclid(Pane::ALL.len() as isize) as usize];
            return;
        }
        Cmd::FocusQueue => return state.focus = Pane::Queue,
        Cmd::FocusTranscript => return state.focus = Pane::Transcript,
        Cmd::FocusTags => return state.focus = Pane::Tags,
        Cmd::FocusGenerate => return state.focus = Pane::Generate,
        Cmd::FocusPreview => return state.focus = Pane::Preview,
        Cmd::CycleTheme => {
            if !state.themes.is_empty() {
                let i = state
                    .themes
                    .iter()
                    .position(|t| *t == state.theme)
                    .map_or(0, |i| (i + 1) % state.themes.len());
                effects.push(Effect::LoadTheme(state.themes[i].clone()));
            }
            return;
        }
        Cmd::ExpandError => {
            if state.last_error.is_some() {
                state.mode = Mode::ErrorDetail;
            } else {
                state.info("no error so far");
            }
            return;
        }
        Cmd::Fullscreen => {
            state.fullscreen = !state.fullscreen;
            return;
        }
        _ => {}
    }
    match state.focus {
        Pane::Queue => queue::queue_command(state, cmd, effects),
        Pane::Transcript => transcript::transcript_command(state, cmd, effects),
        Pane::Tags => tags::tags_command(state, cmd, effects),
        Pane::Generate => generate::generate_command(state, cmd, effects),
        Pane::Preview => {
            if cmd == Cmd::Cancel {
                state.fullscreen = false;
            }
        }
    }
}

fn text_key(state: &mut AppState, key: TextKey, effects: &mut Vec<Effect>) {
    let mode = std::mem::replace(&mut state.mode, Mode::Normal);
    match mode {
        Mode::Normal => {}
        Mode::ErrorDetail => {}
        Mode::Help { scroll } => {
            state.mode = match key {
                TextKey::Down | TextKey::Char('j') => Mode::Help { scroll: scroll + 1 },
                TextKey::Up | TextKey::Char('k') => Mode::Help {
                    scroll: scroll.saturating_sub(1),
                },
                _ => Mode::Normal,
            };
        }
        Mode::Palette { mut edit, selected } => {
            let matches = AppState::palette_matches(&edit.text);
            match key {
                TextKey::Down | TextKey::Tab => {
                    state.mode = Mode::Palette {
                        edit,
                        selected: clamp_move(selected, 1, matches.len()),
                    }
                }
                TextKey::Up => {
                    state.mode = Mode::Palette {
                        edit,
                        selected: clamp_move(selected, -1, matches.len()),
                    }
                }
                _ => match edit.key(key) {
                    EditOutcome::Commit => {
                        if let Some(&cmd) = matches.get(selected) {
                            command(state, cmd, effects);
                        }
                    }
                    EditOutcome::Abort => {}
                    EditOutcome::Changed => state.mode = Mode::Palette { edit, selected: 0 },
                    _ => state.mode = Mode::Palette { edit, selected },
                },
            }
        }
        Mode::Prompt { kind, mut edit } => match edit.key(key) {
            EditOutcome::Commit => commit_prompt(state, kind, edit.text, effects),
            EditOutcome::Abort => {}
            _ => {
                if kind == PromptKind::TranscriptSearch {
                    // Incremental search.
                    state.transcript.search = edit.text.clone();
                    state.transcript.update_matches();
                }
                state.mode = Mode::Prompt { kind, edit };
            }
        },
    }
}

fn commit_prompt(state: &mut AppState, kind: PromptKind, text: String, effects: &mut Vec<Effect>) {
    match kind {
        PromptKind::QueueSearch => {
            let needle = text.to_lowercase();
            let visible = state.library.visible();
            let found = visible.iter().position(|&i| {
                state.library.items[i]
                    .path
                    .to_string_lossy()
                    .to_lowercase()
                    .contains(&needle)
            });
            match found {
                Some(pos) => state.library.cursor = pos,
                None => state.info(format!("no file matches '{text}'")),
            }
        }
        PromptKind::TranscriptSearch => {
            state.transcript.search = text;
            state.transcript.update_matches();
            if !state.transcript.matches.contains(&state.transcript.cursor)
                && !state.transcript.jump_match(true)
            {
                state.info("no match");
            }
        }
        PromptKind::EditSegment => {
            if state.transcript.edit_current(&text) {
                state.info("segment edited: save writes every output format");
            }
        }
        PromptKind::RenameSpeaker => transcript::rename_speaker(state, &text, effects),
        PromptKind::Export => {
            let formats: Vec<String> = text
                .split([',', ' '])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            if let (Some(path), Some(doc)) = (state.transcript.path.clone(), state.transcript.doc())
            {
                effects.push(Effect::SaveTranscript {
                    media: path,
                    transcript: doc.transcript.clone(),
                    formats,
                });
            }
        }
        PromptKind::TagSearch => {
            if !text.trim().is_empty() {
                effects.push(Effect::SearchIndex(text.trim().to_string()));
            }
        }
        PromptKind::CustomTag => {
            let tag = text.trim();
            if !tag.is_empty() && state.tags.accept(tag) {
                state.info(format!("added '{tag}'"));
            }
        }
        PromptKind::Field(field) => {
            let before = state.generate.field_text(field);
            match state.generate.set_field(field, &text) {
                Err(e) => state.error(e),
                Ok(()) => {
                    let prompt_edit = matches!(field, Field::Prompt | Field::Negative);
                    // The seed lock: a changed prompt regenerates with the same seed.
                    if prompt_edit && state.generate.seed_locked && before != text {
                        generate::start_generation(state, effects);
                    }
                }
            }
        }
    }
}

fn event(state: &mut AppState, ev: Event, effects: &mut Vec<Effect>) {
    match ev {
        Event::Found(found) => {
            let mut to_transcribe = Vec::new();
            let mut to_tag = Vec::new();
            let list: Vec<(PathBuf, MediaKind)> =
                found.iter().map(|f| (f.path.clone(), f.kind)).collect();
            let new: std::collections::HashSet<PathBuf> =
                state.library.add(list).into_iter().collect();
            for f in found {
                // A file the journal listed first is not new, but has no transcript shown yet.
                let Some(it) = state.library.find_mut(&f.path) else {
                    continue;
                };
                let untouched = it.job.is_none() && it.state == JobState::Idle;
                match f.kind {
                    MediaKind::Audio => match f.transcript {
                        Some(t) => {
                            if untouched {
                                it.state = JobState::Done;
                                it.progress = 1.0;
                            }
                            if !state.transcript.docs.contains_key(&f.path) {
                                state.transcript.set_transcript(f.path, t);
                            }
                        }
                        None if untouched => {
                            it.state = JobState::Queued;
                            to_transcribe.push(f.path);
                        }
                        None => {}
                    },
                    MediaKind::Image if new.contains(&f.path) => {
                        let i = state.tags.index_of(&f.path);
                        state.tags.items[i].applied = f.tags;
                        to_tag.push(f.path);
                    }
                    MediaKind::Image | MediaKind::Prompt | MediaKind::Other => {}
                }
            }
            if !to_transcribe.is_empty() {
                effects.push(Effect::Transcribe(to_transcribe));
            }
            if !to_tag.is_empty() {
                state.tags.busy = true;
                effects.push(Effect::TagImages {
                    paths: to_tag,
                    label_set: state.tags.label_set_name().to_string(),
                });
            }
        }
        Event::Jobs(updates) => {
            // Only the newest job of each file counts.
            let mut newest: std::collections::HashMap<PathBuf, JobId> =
                std::collections::HashMap::new();
            for u in &updates {
                let id = newest.entry(u.path.clone()).or_insert(u.id);
                *id = (*id).max(u.id);
            }
            for u in updates {
                if newest.get(&u.path) != Some(&u.id) {
                    continue;
                }
                let Some(before) = state.library.apply(&u) else {
                    continue;
                };
                if u.state == JobState::Failed && before.is_active() {
                    // Queue errors name the file already.
                    let shown = u.path.display().to_string();
                    match u.error.as_deref() {
                        Some(e) if e.starts_with(&shown) => state.error(e),
                        e => state.error(format!("{shown}: {}", e.unwrap_or("failed"))),
                    }
                }
                if u.kind == JobKind::Transcribe
                    && u.state == JobState::Running
                    && before != JobState::Running
                {
                    state.transcript.restart(&u.path);
                }
            }
            state.library.clamp_cursor();
        }
        Event::Segment { path, segment } => state.transcript.push_segment(path, segment),
        Event::TranscriptDone { path, transcript } => {
            if let Some(it) = state.library.find_mut(&path) {
                it.state = JobState::Done;
                it.progress = 1.0;
                it.eta = None;
            }
            state.transcript.set_transcript(path, transcript);
        }
        Event::Saved { path, files } => {
            if let Some(doc) = state.transcript.docs.get_mut(&path) {
                doc.modified = false;
            }
            let names: Vec<String> = files
                .iter()
                .filter_map(|f| f.extension().map(|e| e.to_string_lossy().into_owned()))
                .collect();
            state.info(format!("saved {} ({})", path.display(), names.join(", ")));
        }
        Event::LabelSets(sets) => {
            let current = state.tags.label_set_name().to_string();
            state.tags.label_set = sets.iter().position(|s| *s == current).unwrap_or(0);
            state.tags.label_sets = sets;
        }
        Event::TagScores { path, scores } => {
            let i = state.tags.index_of(&path);
            state.tags.items[i].scores = scores;
            state.tags.items[i].error = None;
        }
        Event::TagFailed { path, error } => {
            let i = state.tags.index_of(&path);
            state.tags.items[i].error = Some(error.clone());
            state.error(format!("{}: {error}", path.display()));
        }
        Event::TaggingDone => state.tags.busy = false,
        Event::SearchResults { title, hits } => {
            let shown: Vec<(usize, f32)> = hits
                .iter()
                .map(|(p, s)| (state.tags.index_of(p), *s))
                .collect();
            state.info(format!("{title}: {} result(s)", shown.len()));
            state.tags.results = Some((title, shown));
            state.tags.cursor = 0;
            state.tags.clear_selection();
            state.focus = Pane::Tags;
        }
        Event::SidecarsWritten(n) => state.info(format!("wrote {n} sidecar(s)")),
        Event::PlaybackPosition { path, seconds } => state.transcript.played(&path, seconds),
        Event::PlaybackStopped => state.transcript.playing = None,
        Event::AudioUnavailable(msg) => {
            state.transcript.playing = None;
            if !state.audio_warned {
                state.audio_warned = true;
                state.info(format!("no audio playback: {msg}"));
            }
        }
        Event::GenerateProgress {
            id,
            step,
            total,
            preview,
        } => {
            if let Some(g) = state.generate.find_mut(id) {
                g.status = GenStatus::Running { step, total };
                if preview.is_some() {
                    g.preview = preview;
                }
            }
        }
        Event::GenerateDone { id, image } => {
            if let Some(g) = state.generate.find_mut(id) {
                g.status = GenStatus::Done(image);
            }
        }
        Event::GenerateFailed { id, error } => {
            if let Some(g) = state.generate.find_mut(id) {
                g.status = GenStatus::Failed(error.clone());
            }
            state.error(error);
        }
        Event::GenerateCancelled { id } => {
            if let Some(g) = state.generate.find_mut(id) {
                g.status = GenStatus::Cancelled;
            }
        }
        Event::Model { name, status } => match state.models.iter_mut().find(|(n, _)| *n == name) {
            Some(m) => m.1 = status,
            None => state.models.push((name, status)),
        },
        Event::Memory(m) => state.memory = Some(m),
        Event::ThemeChanged(name) => {
            state.info(format!("theme: {name}"));
            state.theme = name;
        }
        Event::Info(text) => state.info(text),
        Event::Error(text) => state.error(text),
    }
}

#[cfg(test)]
mod tests;
