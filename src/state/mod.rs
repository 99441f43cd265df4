//! Application state and the pure reducer `update(state, action) -> effects`.
//! No tokio, no tch, no I/O: everything here is testable without a terminal or a model.
mod action;
pub mod edit;
pub mod generate;
pub mod library;
pub mod tags;
pub mod transcript;

pub use action::{action_description, Cmd, ACTIONS};
pub use edit::{EditOutcome, TextEdit, TextKey};
pub use generate::{Field, GenStatus, GeneratePane, GenerateRequest, Generation};
pub use library::{Item, JobState, JobUpdate, Library, MediaKind};
pub use tags::{TagItem, TagsPane};
pub use transcript::{Doc, TranscriptPane};

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
    /// A file's job by path (a worker outside the queue).
    Job {
        path: PathBuf,
        state: JobState,
        progress: f64,
        eta: Option<f64>,
        error: Option<String>,
    },
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
            let idx = list_offset(state.transcript.cursor, height) + row;
            if idx < state.transcript.segments().len() {
                state.transcript.cursor = idx;
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
        Pane::Queue => queue_command(state, cmd, effects),
        Pane::Transcript => transcript_command(state, cmd, effects),
        Pane::Tags => tags_command(state, cmd, effects),
        Pane::Generate => generate_command(state, cmd, effects),
        Pane::Preview => {
            if cmd == Cmd::Cancel {
                state.fullscreen = false;
            }
        }
    }
}

fn queue_command(state: &mut AppState, cmd: Cmd, effects: &mut Vec<Effect>) {
    let page = state.page();
    let lib = &mut state.library;
    let n = lib.visible().len();
    match cmd {
        Cmd::Down => lib.cursor = clamp_move(lib.cursor, 1, n),
        Cmd::Up => lib.cursor = clamp_move(lib.cursor, -1, n),
        Cmd::PageDown => lib.cursor = clamp_move(lib.cursor, page, n),
        Cmd::PageUp => lib.cursor = clamp_move(lib.cursor, -page, n),
        Cmd::Top => lib.cursor = 0,
        Cmd::Bottom => lib.cursor = n.saturating_sub(1),
        Cmd::ToggleMark => {
            if let Some(p) = lib.current().map(|i| i.path.clone()) {
                if !lib.marks.remove(&p) {
                    lib.marks.insert(p);
                }
                lib.cursor = clamp_move(lib.cursor, 1, n);
            }
        }
        Cmd::Cancel => lib.marks.clear(),
        Cmd::FilterKind => lib.cycle_kind_filter(),
        Cmd::FilterState => lib.cycle_state_filter(),
        Cmd::Search => open_prompt(state, PromptKind::QueueSearch, ""),
        Cmd::Open => {
            if let Some(it) = lib.current().cloned() {
                match it.kind {
                    MediaKind::Audio => {
                        state.transcript.show(it.path);
                        state.focus = Pane::Transcript;
                    }
                    MediaKind::Image => {
                        let i = state.tags.index_of(&it.path);
                        state.tags.results = None;
                        state.tags.cursor = i;
                        state.focus = Pane::Tags;
                    }
                    MediaKind::Prompt | MediaKind::Other => {}
                }
            }
        }
        Cmd::Enqueue => {
            let sel = lib.selection();
            let mut audio = Vec::new();
            let mut images = Vec::new();
            for p in sel {
                let Some(it) = lib.find_mut(&p) else { continue };
                if it.state.is_active() {
                    continue;
                }
                match it.kind {
                    MediaKind::Audio => {
                        it.state = JobState::Queued;
                        it.progress = 0.0;
                        it.error = None;
                        audio.push(p);
                    }
                    MediaKind::Image => images.push(p),
                    MediaKind::Prompt | MediaKind::Other => {}
                }
            }
            lib.marks.clear();
            if !audio.is_empty() {
                effects.push(Effect::Transcribe(audio));
            }
            if !images.is_empty() {
                let label_set = state.tags.label_set_name().to_string();
                for p in &images {
                    state.tags.index_of(p);
                }
                state.tags.busy = true;
                effects.push(Effect::TagImages {
                    paths: images,
                    label_set,
                });
            }
        }
        Cmd::Retry => {
            if let Some(it) = lib.current().cloned() {
                if matches!(it.state, JobState::Failed | JobState::Cancelled) {
                    if let Some(m) = lib.find_mut(&it.path) {
                        m.state = JobState::Queued;
                        m.progress = 0.0;
                        m.error = None;
                    }
                    // The journal's job again (any kind); a file without one is transcribed.
                    match it.job {
                        Some(id) => effects.push(Effect::RetryJob(id)),
                        None => effects.push(Effect::Transcribe(vec![it.path])),
                    }
                } else {
                    state.info(format!(
                        "{} is {}: nothing to retry",
                        it.path.display(),
                        it.state.name()
                    ));
                }
            }
        }
        Cmd::CancelJob => match lib.current().map(|it| (it.state.is_active(), it.job)) {
            Some((true, Some(id))) => effects.push(Effect::CancelJob(id)),
            Some((true, None)) => state.info("the job is not in the queue yet: try again"),
            Some((false, _)) => state.info("no queued or running job here"),
            None => {}
        },
        Cmd::PriorityUp | Cmd::PriorityDown => {
            let d = if cmd == Cmd::PriorityUp { 1 } else { -1 };
            let cur = lib.current().map(|i| i.path.clone());
            match cur.and_then(|p| lib.find_mut(&p)) {
                Some(it) if it.state.is_active() && it.job.is_some() => {
                    it.priority += d;
                    if let Some(id) = it.job {
                        effects.push(Effect::Reprioritize(id, it.priority));
                    }
                }
                Some(_) => state.info("no queued or running job here to re-prioritize"),
                None => {}
            }
        }
        _ => {}
    }
}

fn transcript_command(state: &mut AppState, cmd: Cmd, effects: &mut Vec<Effect>) {
    let page = state.page();
    let t = &mut state.transcript;
    match cmd {
        Cmd::Down => t.move_by(1),
        Cmd::Up => t.move_by(-1),
        Cmd::PageDown => t.move_by(page),
        Cmd::PageUp => t.move_by(-page),
        Cmd::Top => t.cursor = 0,
        Cmd::Bottom => t.move_by(isize::MAX / 2),
        Cmd::Search => {
            let s = t.search.clone();
            open_prompt(state, PromptKind::TranscriptSearch, &s);
        }
        Cmd::SearchNext | Cmd::SearchPrev if !t.jump_match(cmd == Cmd::SearchNext) => {
            state.info("no match")
        }
        Cmd::Cancel => {
            t.search.clear();
            t.update_matches();
        }
        Cmd::EditSegment | Cmd::Open => {
            if let Some(seg) = t.current() {
                let text = seg.text.trim().to_string();
                open_prompt(state, PromptKind::EditSegment, &text);
            }
        }
        Cmd::PlaySegment => {
            let (Some(path), Some(seg)) = (t.path.clone(), t.current().cloned()) else {
                return;
            };
            if t.playing
                .as_ref()
                .is_some_and(|(p, i, _)| *p == path && *i == t.cursor)
            {
                t.playing = None;
                effects.push(Effect::StopPlayback);
            } else {
                t.playing = Some((path.clone(), t.cursor, seg.start));
                effects.push(Effect::Play {
                    path,
                    start: seg.start,
                    end: seg.end,
                });
            }
        }
        Cmd::Save => match (t.path.clone(), t.doc()) {
            (Some(_), Some(doc)) if !doc.complete => {
                state.info("the transcript is still being made; edits can be saved when it is done")
            }
            (Some(path), Some(doc)) if doc.modified => {
                effects.push(Effect::SaveTranscript {
                    media: path,
                    transcript: doc.transcript.clone(),
                    formats: Vec::new(),
                });
            }
            _ => state.info("nothing to save"),
        },
        Cmd::Export if t.doc().is_some() => open_prompt(state, PromptKind::Export, "all"),
        _ => {}
    }
}

fn tags_command(state: &mut AppState, cmd: Cmd, effects: &mut Vec<Effect>) {
    let page = state.page();
    let tg = &mut state.tags;
    match cmd {
        Cmd::Down => tg.move_by(1),
        Cmd::Up => tg.move_by(-1),
        Cmd::PageDown => tg.move_by(page),
        Cmd::PageUp => tg.move_by(-page),
        Cmd::Top => tg.move_by(-(tg.cursor as isize)),
        Cmd::Bottom => tg.move_by(isize::MAX / 2),
        Cmd::ToggleMark => {
            tg.toggle_mark();
            tg.move_by(1);
        }
        Cmd::VisualSelect => tg.visual(),
        Cmd::Cancel => {
            if tg.anchor.is_some() || !tg.marks.is_empty() {
                tg.clear_selection();
            } else if tg.results.take().is_some() {
                tg.cursor = 0;
            }
        }
        Cmd::TagNext => tg.move_tag(1),
        Cmd::TagPrev => tg.move_tag(-1),
        Cmd::AcceptTag | Cmd::RejectTag => {
            let Some(tag) = tg.cursor_tag() else {
                return state.info("no tag under the tag cursor");
            };
            let n = tg.selection().len();
            let changed = if cmd == Cmd::AcceptTag {
                tg.accept(&tag)
            } else {
                tg.reject(&tag)
            };
            if changed {
                let verb = if cmd == Cmd::AcceptTag {
                    "accepted"
                } else {
                    "rejected"
                };
                state.info(format!("{verb} '{tag}' for {n} image(s)"));
            }
        }
        Cmd::AddTag => open_prompt(state, PromptKind::CustomTag, ""),
        Cmd::ApplyTags => {
            let writes = tg.apply();
            if writes.is_empty() {
                state.info("no tag changes to apply in the selection");
            } else {
                tg.clear_selection();
                effects.push(Effect::WriteSidecars(
                    writes.into_iter().map(|(p, t)| (p, Some(t))).collect(),
                ));
            }
        }
        Cmd::Undo => match tg.undo() {
            None => state.info("nothing to undo"),
            Some(writes) if writes.is_empty() => state.info("undone"),
            Some(writes) => {
                state.info(format!("undone: restoring {} sidecar(s)", writes.len()));
                effects.push(Effect::WriteSidecars(writes));
            }
        },
        Cmd::NextLabelSet if !tg.label_sets.is_empty() => {
            tg.label_set = (tg.label_set + 1) % tg.label_sets.len();
            for it in &mut tg.items {
                it.scores.clear();
            }
            tg.tag_cursor = 0;
            let paths: Vec<PathBuf> = tg.items.iter().map(|i| i.path.clone()).collect();
            let name = tg.label_set_name().to_string();
            if !paths.is_empty() {
                tg.busy = true;
                effects.push(Effect::TagImages {
                    paths,
                    label_set: name.clone(),
                });
            }
            state.info(format!("label set: {name}"));
        }
        Cmd::Search => open_prompt(state, PromptKind::TagSearch, ""),
        Cmd::Similar => {
            if let Some(it) = tg.current() {
                effects.push(Effect::Similar(it.path.clone()));
            }
        }
        Cmd::Open => state.fullscreen = !state.fullscreen,
        _ => {}
    }
}

fn generate_command(state: &mut AppState, cmd: Cmd, effects: &mut Vec<Effect>) {
    let g = &mut state.generate;
    let n = Field::ALL.len();
    match cmd {
        Cmd::Down => g.field = clamp_move(g.field, 1, n),
        Cmd::Up => g.field = clamp_move(g.field, -1, n),
        Cmd::Top => g.field = 0,
        Cmd::Bottom => g.field = n - 1,
        Cmd::Increase => g.nudge(true),
        Cmd::Decrease => g.nudge(false),
        Cmd::EditField | Cmd::Open => {
            let f = g.current_field();
            let text = g.field_text(f);
            open_prompt(state, PromptKind::Field(f), &text);
        }
        Cmd::EditPrompt | Cmd::EditNegative => {
            let f = if cmd == Cmd::EditPrompt {
                Field::Prompt
            } else {
                Field::Negative
            };
            let text = g.field_text(f);
            open_prompt(state, PromptKind::Field(f), &text);
        }
        Cmd::Generate => start_generation(state, effects),
        Cmd::CancelGenerate => match g.running() {
            Some(id) => effects.push(Effect::CancelGenerate(id)),
            None => state.info("no generation is running"),
        },
        Cmd::SeedLock => {
            g.seed_locked = !g.seed_locked;
            let s = if g.seed_locked {
                format!(
                    "seed locked at {}: prompt edits regenerate with it",
                    g.params.seed
                )
            } else {
                "seed unlocked: each generation gets a new seed".to_string()
            };
            state.info(s);
        }
        Cmd::SeedUp => g.seed_step(true),
        Cmd::SeedDown => g.seed_step(false),
        Cmd::SeedRandom => g.params.seed = g.random_seed(),
        Cmd::HistoryNext => g.history_cursor = clamp_move(g.history_cursor, 1, g.history.len()),
        Cmd::HistoryPrev => g.history_cursor = clamp_move(g.history_cursor, -1, g.history.len()),
        Cmd::Restore => {
            let i = g.history_cursor;
            if g.restore(i) {
                state.info(format!("restored generation #{}", i + 1));
            }
        }
        Cmd::Compare => {
            let last = g.history.len().saturating_sub(1);
            if g.compare.take().is_none() {
                if g.history.len() >= 2 {
                    let other = if g.history_cursor == last {
                        last.saturating_sub(1)
                    } else {
                        last
                    };
                    g.compare = Some((g.history_cursor, other));
                } else {
                    state.info("compare needs two generations in the history");
                }
            }
        }
        Cmd::Cancel => g.compare = None,
        _ => {}
    }
}

fn start_generation(state: &mut AppState, effects: &mut Vec<Effect>) {
    if state.generate.params.prompt.trim().is_empty() {
        return state.info("write a prompt first (e)");
    }
    if let Some(id) = state.generate.running() {
        // Latest request wins: the running one is cancelled.
        effects.push(Effect::CancelGenerate(id));
    }
    let req = state.generate.start();
    effects.push(Effect::Generate(req));
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
                        start_generation(state, effects);
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
        Event::Job {
            path,
            state: js,
            progress,
            eta,
            error,
        } => {
            if let Some(e) = &error {
                state.error(format!("{}: {e}", path.display()));
            }
            if let Some(it) = state.library.find_mut(&path) {
                it.state = js;
                it.progress = progress;
                it.eta = eta;
                it.error = error;
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
        Event::PlaybackPosition { path, seconds } => {
            if let Some((p, _, pos)) = state.transcript.playing.as_mut() {
                if *p == path {
                    *pos = seconds;
                }
            }
        }
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
                g.status = if error == "cancelled" {
                    GenStatus::Cancelled
                } else {
                    GenStatus::Failed(error.clone())
                };
            }
            if error != "cancelled" {
                state.error(error);
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
