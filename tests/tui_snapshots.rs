//! Snapshots of every pane (ratatui TestBackend + insta) at 80×24 and 200×60.
//! States are built through the reducer with fixed paths, so nothing needs filtering.
//! CI runs with CI=true: a missing or changed snapshot fails.
use atelier::config::{Keymap, StyleName, Theme};
use atelier::state::{update, Action, AppState, Cmd, Event, Found, JobState, MediaKind, TextKey};
use atelier::transcript::{Segment, Transcript};
use atelier::ui::{self, Ctx};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use std::path::{Path, PathBuf};

fn screen(state: &mut AppState, w: u16, h: u16) -> String {
    state.size = (w, h);
    let theme = Theme::preset_default();
    let keymap = Keymap::preset();
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    term.draw(|f| {
        ui::render(
            state,
            &mut Ctx {
                theme: &theme,
                keymap: &keymap,
                image: None,
                compare: [None, None],
            },
            f,
        )
    })
    .unwrap();
    term.backend().to_string()
}

fn both(name: &str, state: &mut AppState) {
    insta::assert_snapshot!(format!("{name}_80x24"), screen(state, 80, 24));
    insta::assert_snapshot!(format!("{name}_200x60"), screen(state, 200, 60));
}

fn ev(s: &mut AppState, e: Event) {
    update(s, Action::Event(e));
}

fn cmd(s: &mut AppState, c: Cmd) {
    update(s, Action::Cmd(c));
}

fn typed(s: &mut AppState, text: &str) {
    for c in text.chars() {
        update(s, Action::Text(TextKey::Char(c)));
    }
}

fn seg(id: usize, start: f64, text: &str) -> Segment {
    Segment {
        speaker: None,
        id,
        seek: 0,
        start,
        end: start + 3.5,
        text: format!(" {text}"),
        tokens: vec![],
        temperature: 0.0,
        avg_logprob: -0.2,
        compression_ratio: 1.2,
        no_speech_prob: 0.01,
        words: None,
    }
}

fn base() -> AppState {
    AppState::new(
        "CPU".into(),
        vec!["dark".into(), "light".into(), "high-contrast".into()],
        "dark".into(),
        7,
    )
}

fn found(path: &str, kind: MediaKind) -> Found {
    Found {
        path: PathBuf::from(path),
        kind,
        transcript: None,
        tags: None,
    }
}

/// A library mid-run: one file done, one transcribing, one failed, one queued; two images.
fn busy() -> AppState {
    let mut s = base();
    ev(
        &mut s,
        Event::Model {
            name: "whisper-tiny.en".into(),
            status: None,
        },
    );
    ev(
        &mut s,
        Event::Found(vec![
            found("/media/interview.wav", MediaKind::Audio),
            found("/media/lecture-01.mp3", MediaKind::Audio),
            found("/media/broken.ogg", MediaKind::Audio),
            found("/media/voice-memo.m4a", MediaKind::Audio),
            found("/media/beach.png", MediaKind::Image),
            found("/media/forest.jpg", MediaKind::Image),
        ]),
    );
    let lines = [
        "Thanks for coming in today.",
        "It's a pleasure. I've been looking forward to this.",
        "Let's start with how the project began.",
        "It began with a question nobody could answer.",
        "What was the question?",
        "Why do terminals still feel like the fastest way to work?",
    ];
    for (i, l) in lines.iter().enumerate() {
        ev(
            &mut s,
            Event::Segment {
                path: "/media/interview.wav".into(),
                segment: seg(i, i as f64 * 3.5, l),
            },
        );
    }
    let t = Transcript {
        text: lines.iter().map(|l| format!(" {l}")).collect(),
        segments: lines
            .iter()
            .enumerate()
            .map(|(i, l)| seg(i, i as f64 * 3.5, l))
            .collect(),
        language: "en".into(),
    };
    ev(
        &mut s,
        Event::TranscriptDone {
            path: "/media/interview.wav".into(),
            transcript: t,
        },
    );
    ev(
        &mut s,
        Event::Segment {
            path: "/media/lecture-01.mp3".into(),
            segment: seg(0, 0.0, "Welcome to the first lecture."),
        },
    );
    // Jobs run outside the queue (no journal id): set on the items as a worker would.
    let it = s
        .library
        .find_mut(Path::new("/media/lecture-01.mp3"))
        .unwrap();
    (it.state, it.progress, it.eta) = (JobState::Running, 0.42, Some(73.0));
    let it = s.library.find_mut(Path::new("/media/broken.ogg")).unwrap();
    (it.state, it.progress) = (JobState::Failed, 0.0);
    it.error = Some("cannot decode: end of stream".into());
    s.error("/media/broken.ogg: cannot decode: end of stream");
    for (p, scores) in [
        (
            "/media/beach.png",
            [
                ("beach", 0.71),
                ("sea", 0.12),
                ("sand", 0.08),
                ("sky", 0.05),
            ],
        ),
        (
            "/media/forest.jpg",
            [
                ("forest", 0.64),
                ("tree", 0.2),
                ("moss", 0.1),
                ("fog", 0.03),
            ],
        ),
    ] {
        ev(
            &mut s,
            Event::TagScores {
                path: p.into(),
                scores: scores
                    .iter()
                    .map(|(l, v)| (l.to_string(), *v as f32))
                    .collect(),
            },
        );
    }
    ev(&mut s, Event::TaggingDone);
    s
}

#[test]
fn startup_empty() {
    both("startup", &mut base());
}

#[test]
fn queue_with_jobs() {
    let mut s = busy();
    cmd(&mut s, Cmd::Down);
    both("queue", &mut s);
}

#[test]
fn transcript_search_and_cursor() {
    let mut s = busy();
    cmd(&mut s, Cmd::Open);
    cmd(&mut s, Cmd::Search);
    typed(&mut s, "question");
    update(&mut s, Action::Text(TextKey::Enter));
    both("transcript", &mut s);
}

#[test]
fn transcript_editing_a_segment() {
    let mut s = busy();
    cmd(&mut s, Cmd::FocusTranscript);
    cmd(&mut s, Cmd::Down);
    cmd(&mut s, Cmd::EditSegment);
    typed(&mut s, " Truly.");
    both("transcript_edit", &mut s);
}

#[test]
fn tags_with_a_selection() {
    let mut s = busy();
    cmd(&mut s, Cmd::FocusTags);
    cmd(&mut s, Cmd::VisualSelect);
    cmd(&mut s, Cmd::Down);
    cmd(&mut s, Cmd::TagNext);
    cmd(&mut s, Cmd::RejectTag);
    both("tags", &mut s);
}

#[test]
fn generate_with_a_locked_seed_and_history() {
    let mut s = busy();
    cmd(&mut s, Cmd::FocusGenerate);
    cmd(&mut s, Cmd::EditPrompt);
    typed(&mut s, "a lighthouse on a cliff, oil painting");
    update(&mut s, Action::Text(TextKey::Enter));
    cmd(&mut s, Cmd::SeedLock);
    cmd(&mut s, Cmd::Generate);
    let id = s.generate.history[0].request.id;
    ev(
        &mut s,
        Event::GenerateFailed {
            id,
            error: atelier::app::SD_UNAVAILABLE.into(),
        },
    );
    both("generate", &mut s);
}

#[test]
fn help_overlay_from_the_keymap() {
    let mut s = busy();
    cmd(&mut s, Cmd::FocusTranscript);
    cmd(&mut s, Cmd::Help);
    both("help", &mut s);
}

#[test]
fn command_palette() {
    let mut s = busy();
    cmd(&mut s, Cmd::Palette);
    typed(&mut s, "seed");
    both("palette", &mut s);
}

#[test]
fn fullscreen_transcript_and_error_detail() {
    let mut s = busy();
    cmd(&mut s, Cmd::FocusTranscript);
    cmd(&mut s, Cmd::Fullscreen);
    both("fullscreen", &mut s);
    cmd(&mut s, Cmd::ExpandError);
    both("error_detail", &mut s);
}

/// An interview, diarized: two speakers, one renamed.
fn diarized() -> AppState {
    let mut s = busy();
    let who = [
        "Ada",
        "SPEAKER_01",
        "Ada",
        "SPEAKER_01",
        "Ada",
        "SPEAKER_01",
    ];
    let mut t = s.transcript.docs[Path::new("/media/interview.wav")]
        .transcript
        .clone();
    for (seg, name) in t.segments.iter_mut().zip(who) {
        seg.speaker = Some(name.to_string());
    }
    ev(
        &mut s,
        Event::TranscriptDone {
            path: "/media/interview.wav".into(),
            transcript: t,
        },
    );
    cmd(&mut s, Cmd::FocusTranscript);
    s
}

#[test]
fn transcript_speakers_labelled_coloured_and_filtered() {
    let mut s = diarized();
    cmd(&mut s, Cmd::Down);
    both("transcript_speakers", &mut s);
    // each label in its speaker's theme colour, in order of first appearance
    let theme = Theme::preset_default();
    s.size = (200, 60);
    let keymap = Keymap::preset();
    let mut term = Terminal::new(TestBackend::new(200, 60)).unwrap();
    term.draw(|f| {
        ui::render(
            &s,
            &mut Ctx {
                theme: &theme,
                keymap: &keymap,
                image: None,
                compare: [None, None],
            },
            f,
        )
    })
    .unwrap();
    let buf = term.backend().buffer().clone();
    let find = |word: &str| {
        (0..buf.area.height)
            .find_map(|y| {
                let line: String = (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect();
                line.find(word)
                    .map(|col| (line[..col].chars().count() as u16, y))
            })
            .unwrap_or_else(|| panic!("{word} is not on screen"))
    };
    for (word, style) in [
        ("Ada", StyleName::Speaker1),
        ("SPEAKER_01", StyleName::Speaker2),
    ] {
        let (x, y) = find(word);
        assert_eq!(buf[(x, y)].fg, theme.get(style).fg.unwrap(), "{word}");
    }
    assert_ne!(
        theme.get(StyleName::Speaker1).fg,
        theme.get(StyleName::Speaker2).fg
    );
    cmd(&mut s, Cmd::FilterSpeaker);
    insta::assert_snapshot!("transcript_speaker_filter_80x24", screen(&mut s, 80, 24));
}

#[test]
fn too_small() {
    insta::assert_snapshot!("too_small_79x24", screen(&mut busy(), 79, 24));
    insta::assert_snapshot!("too_small_100x23", screen(&mut busy(), 100, 23));
}

#[test]
fn docs_list_every_default_key() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/tui.md")).unwrap();
    let start = doc.find("-->\n").unwrap() + 4;
    let end = doc.find("<!-- keys:end -->").unwrap();
    let want = ui::keys_markdown(&Keymap::preset());
    assert_eq!(
        &doc[start..end],
        want,
        "regenerate the key table in docs/tui.md:\n{want}"
    );
}
