//! Reducer tests: every pane's key flows, without a terminal or a model.
use super::*;
use crate::transcript::{Segment, Transcript};
use std::path::{Path, PathBuf};

fn state() -> AppState {
    AppState::new(
        "CPU".into(),
        vec!["dark".into(), "light".into()],
        "dark".into(),
        42,
    )
}

fn cmd(s: &mut AppState, c: Cmd) -> Vec<Effect> {
    update(s, Action::Cmd(c))
}

fn typed(s: &mut AppState, text: &str) {
    for c in text.chars() {
        update(s, Action::Text(TextKey::Char(c)));
    }
}

fn ev(s: &mut AppState, e: Event) -> Vec<Effect> {
    update(s, Action::Event(e))
}

fn seg(id: usize, start: f64, text: &str) -> Segment {
    Segment {
        speaker: None,
        id,
        seek: 0,
        start,
        end: start + 2.0,
        text: format!(" {text}"),
        tokens: vec![],
        temperature: 0.0,
        avg_logprob: -0.2,
        compression_ratio: 1.2,
        no_speech_prob: 0.01,
        words: None,
    }
}

fn found(path: &str, kind: MediaKind) -> Found {
    Found {
        path: PathBuf::from(path),
        kind,
        transcript: None,
        tags: None,
    }
}

fn effects_of<T>(effects: &[Effect], f: impl Fn(&Effect) -> Option<T>) -> Vec<T> {
    effects.iter().filter_map(f).collect()
}

// ---- library / queue ----

#[test]
fn found_audio_is_queued_for_transcription_and_images_for_tagging() {
    let mut s = state();
    let fx = ev(
        &mut s,
        Event::Found(vec![
            found("/d/a.wav", MediaKind::Audio),
            found("/d/b.png", MediaKind::Image),
            found("/d/c.wav", MediaKind::Audio),
        ]),
    );
    assert!(fx.contains(&Effect::Transcribe(vec![
        "/d/a.wav".into(),
        "/d/c.wav".into()
    ])));
    assert!(fx.iter().any(|e| matches!(e, Effect::TagImages { paths, .. } if paths == &vec![PathBuf::from("/d/b.png")])));
    assert_eq!(s.library.items[0].state, JobState::Queued);
    // Seen again: nothing new to do.
    let fx = ev(
        &mut s,
        Event::Found(vec![found("/d/a.wav", MediaKind::Audio)]),
    );
    assert!(!fx.iter().any(|e| matches!(e, Effect::Transcribe(_))));
    assert_eq!(s.library.items.len(), 3);
}

#[test]
fn an_existing_transcript_is_shown_not_made_again() {
    let mut s = state();
    let t = Transcript {
        text: " hi".into(),
        segments: vec![seg(0, 0.0, "hi")],
        language: "en".into(),
    };
    let mut f = found("/d/a.wav", MediaKind::Audio);
    f.transcript = Some(t);
    let fx = ev(&mut s, Event::Found(vec![f]));
    assert!(!fx.iter().any(|e| matches!(e, Effect::Transcribe(_))));
    assert_eq!(s.library.items[0].state, JobState::Done);
    assert_eq!(
        s.transcript.segments().len(),
        1,
        "the cursor's audio is shown"
    );
}

fn job(id: i64, kind: JobKind, path: &str, state: JobState) -> JobUpdate {
    JobUpdate {
        id: JobId(id),
        kind,
        path: path.into(),
        state,
        priority: 10,
        progress: 0.0,
        eta: None,
        error: None,
    }
}

#[test]
fn queue_cancel_retry_priority_and_filters_go_to_the_journal_job() {
    let mut s = state();
    ev(
        &mut s,
        Event::Found(vec![
            found("/d/a.wav", MediaKind::Audio),
            found("/d/b.wav", MediaKind::Audio),
        ]),
    );
    // Queued here, but the journal has not given it an id yet: nothing to cancel by id.
    assert!(cmd(&mut s, Cmd::CancelJob).is_empty());
    assert!(s
        .status
        .as_ref()
        .is_some_and(|st| st.text.contains("not in the queue yet")));
    ev(
        &mut s,
        Event::Jobs(vec![
            job(7, JobKind::Transcribe, "/d/a.wav", JobState::Queued),
            job(8, JobKind::Transcribe, "/d/b.wav", JobState::Queued),
        ]),
    );
    let fx = cmd(&mut s, Cmd::CancelJob);
    assert_eq!(fx, vec![Effect::CancelJob(JobId(7))]);
    ev(
        &mut s,
        Event::Jobs(vec![job(
            7,
            JobKind::Transcribe,
            "/d/a.wav",
            JobState::Cancelled,
        )]),
    );
    assert_eq!(s.library.items[0].state, JobState::Cancelled);
    // Cancelled: no cancel, no priority change.
    assert!(cmd(&mut s, Cmd::CancelJob).is_empty());
    assert!(cmd(&mut s, Cmd::PriorityUp).is_empty());
    let fx = cmd(&mut s, Cmd::Retry);
    assert_eq!(fx, vec![Effect::RetryJob(JobId(7))]);
    assert_eq!(s.library.items[0].state, JobState::Queued);
    // Retrying a queued job does nothing.
    assert!(cmd(&mut s, Cmd::Retry).is_empty());
    cmd(&mut s, Cmd::Down);
    let fx = cmd(&mut s, Cmd::PriorityUp);
    assert_eq!(fx, vec![Effect::Reprioritize(JobId(8), 11)]);
    let fx = cmd(&mut s, Cmd::PriorityDown);
    assert_eq!(fx, vec![Effect::Reprioritize(JobId(8), 10)]);
    // A failure of a job we saw queued shows in the status bar and the item.
    let mut failed = job(8, JobKind::Transcribe, "/d/b.wav", JobState::Failed);
    failed.error = Some("bad file".into());
    ev(&mut s, Event::Jobs(vec![failed]));
    assert!(s
        .status
        .as_ref()
        .is_some_and(|st| st.error && st.text.contains("bad file")));
    assert_eq!(s.library.items[1].error.as_deref(), Some("bad file"));
    cmd(&mut s, Cmd::FilterState); // idle
    assert_eq!(s.library.visible().len(), 0);
    for _ in 0..4 {
        cmd(&mut s, Cmd::FilterState); // queued, running, done, failed
    }
    assert_eq!(s.library.visible(), vec![1]);
    cmd(&mut s, Cmd::FilterState); // cancelled
    cmd(&mut s, Cmd::FilterState); // all
    assert_eq!(s.library.visible().len(), 2);
}

#[test]
fn a_file_without_a_journal_job_is_retried_by_transcribing_it() {
    let mut s = state();
    ev(
        &mut s,
        Event::Found(vec![found("/d/a.wav", MediaKind::Audio)]),
    );
    // A file that failed outside the queue (no journal job).
    s.library.find_mut(Path::new("/d/a.wav")).unwrap().state = JobState::Failed;
    assert_eq!(
        cmd(&mut s, Cmd::Retry),
        vec![Effect::Transcribe(vec!["/d/a.wav".into()])]
    );
}

#[test]
fn jobs_of_other_processes_are_listed_and_filtered_by_kind_and_state() {
    let mut s = state();
    ev(
        &mut s,
        Event::Found(vec![found("/d/a.wav", MediaKind::Audio)]),
    );
    // `atelier watch` on the same journal: a checksum of a file the TUI did not open.
    ev(
        &mut s,
        Event::Jobs(vec![
            job(3, JobKind::Checksum, "/w/data.bin", JobState::Running),
            job(4, JobKind::Tag, "/w/cat.png", JobState::Done),
        ]),
    );
    assert_eq!(s.library.items.len(), 3);
    let bin = &s.library.items[1];
    assert_eq!(
        (bin.kind, bin.state, bin.job, bin.job_kind),
        (
            MediaKind::Other,
            JobState::Running,
            Some(JobId(3)),
            Some(JobKind::Checksum)
        )
    );
    // Kind filter: audio, image, prompt, other, all.
    cmd(&mut s, Cmd::FilterKind);
    assert_eq!(s.library.visible(), vec![0]);
    cmd(&mut s, Cmd::FilterKind);
    assert_eq!(s.library.visible(), vec![2]);
    cmd(&mut s, Cmd::FilterKind);
    assert!(s.library.visible().is_empty());
    cmd(&mut s, Cmd::FilterKind);
    assert_eq!(s.library.visible(), vec![1]);
    // With a state filter too: other files that are done.
    for _ in 0..4 {
        cmd(&mut s, Cmd::FilterState); // idle, queued, running, done
    }
    assert!(s.library.visible().is_empty());
    ev(
        &mut s,
        Event::Jobs(vec![job(
            3,
            JobKind::Checksum,
            "/w/data.bin",
            JobState::Done,
        )]),
    );
    assert_eq!(s.library.visible(), vec![1]);
    cmd(&mut s, Cmd::FilterKind);
    assert_eq!(s.library.visible(), vec![1, 2]);
}

#[test]
fn an_older_job_never_overwrites_a_newer_one_of_the_same_file() {
    let mut s = state();
    ev(
        &mut s,
        Event::Jobs(vec![job(
            9,
            JobKind::Transcribe,
            "/d/a.wav",
            JobState::Running,
        )]),
    );
    ev(
        &mut s,
        Event::Jobs(vec![job(
            5,
            JobKind::Transcribe,
            "/d/a.wav",
            JobState::Failed,
        )]),
    );
    let it = &s.library.items[0];
    assert_eq!((it.job, it.state), (Some(JobId(9)), JobState::Running));
    assert!(s.status.is_none(), "an old failure is not reported");
    // In one batch (the journal's history, oldest first), only the newest job of a file counts.
    ev(
        &mut s,
        Event::Found(vec![found("/d/b.wav", MediaKind::Audio)]),
    );
    ev(
        &mut s,
        Event::Jobs(vec![
            job(11, JobKind::Transcribe, "/d/b.wav", JobState::Failed),
            job(12, JobKind::Transcribe, "/d/b.wav", JobState::Queued),
        ]),
    );
    let it = &s.library.items[1];
    assert_eq!((it.job, it.state), (Some(JobId(12)), JobState::Queued));
    assert!(s.status.is_none(), "an old failure is not reported");
}

#[test]
fn progress_and_eta_show_per_job_and_overall() {
    let mut s = state();
    let mut a = job(1, JobKind::Transcribe, "/d/a.wav", JobState::Running);
    a.progress = 0.5;
    a.eta = Some(30.0);
    ev(
        &mut s,
        Event::Jobs(vec![
            a,
            job(2, JobKind::Transcribe, "/d/b.wav", JobState::Done),
        ]),
    );
    assert_eq!(s.library.items[0].progress, 0.5);
    let (p, eta) = s.library.overall().unwrap();
    assert!((p - 0.75).abs() < 1e-9, "{p}");
    assert_eq!(eta, Some(30.0));
    // Nothing running: no ETA (not "0:00").
    ev(
        &mut s,
        Event::Jobs(vec![job(
            1,
            JobKind::Transcribe,
            "/d/a.wav",
            JobState::Done,
        )]),
    );
    assert_eq!(s.library.overall(), Some((1.0, None)));
}

#[test]
fn a_queue_error_that_names_its_file_is_shown_once() {
    let mut s = state();
    ev(
        &mut s,
        Event::Jobs(vec![job(
            1,
            JobKind::Transcribe,
            "/d/a.wav",
            JobState::Running,
        )]),
    );
    let mut failed = job(1, JobKind::Transcribe, "/d/a.wav", JobState::Failed);
    failed.error = Some("/d/a.wav: model 'x' is not installed".into());
    ev(&mut s, Event::Jobs(vec![failed]));
    assert_eq!(
        s.status.as_ref().map(|st| st.text.as_str()),
        Some("/d/a.wav: model 'x' is not installed")
    );
}

#[test]
fn a_restarted_transcription_streams_its_segments_afresh() {
    let mut s = state();
    ev(
        &mut s,
        Event::Found(vec![found("/d/a.wav", MediaKind::Audio)]),
    );
    ev(
        &mut s,
        Event::Jobs(vec![job(
            1,
            JobKind::Transcribe,
            "/d/a.wav",
            JobState::Running,
        )]),
    );
    for i in 0..2 {
        ev(
            &mut s,
            Event::Segment {
                path: "/d/a.wav".into(),
                segment: seg(i, i as f64, "x"),
            },
        );
    }
    assert_eq!(s.transcript.segments().len(), 2);
    // Stopped (the TUI quit, say) and run again: the pane starts over, not doubled.
    ev(
        &mut s,
        Event::Jobs(vec![job(
            1,
            JobKind::Transcribe,
            "/d/a.wav",
            JobState::Queued,
        )]),
    );
    ev(
        &mut s,
        Event::Jobs(vec![job(
            1,
            JobKind::Transcribe,
            "/d/a.wav",
            JobState::Running,
        )]),
    );
    assert_eq!(s.transcript.segments().len(), 0);
}

#[test]
fn a_file_the_journal_listed_first_is_not_queued_again_but_shows_its_transcript() {
    let mut s = state();
    ev(
        &mut s,
        Event::Jobs(vec![
            job(1, JobKind::Transcribe, "/d/a.wav", JobState::Failed),
            job(2, JobKind::Transcribe, "/d/b.wav", JobState::Done),
        ]),
    );
    let t = Transcript {
        text: " hi".into(),
        segments: vec![seg(0, 0.0, "hi")],
        language: "en".into(),
    };
    let mut b = found("/d/b.wav", MediaKind::Audio);
    b.transcript = Some(t);
    let fx = ev(
        &mut s,
        Event::Found(vec![
            found("/d/a.wav", MediaKind::Audio),
            b,
            found("/d/c.wav", MediaKind::Audio),
        ]),
    );
    assert_eq!(fx, vec![Effect::Transcribe(vec!["/d/c.wav".into()])]);
    assert_eq!(s.library.items[0].state, JobState::Failed);
    assert!(s.transcript.docs.contains_key(Path::new("/d/b.wav")));
}

#[test]
fn marks_and_enqueue_send_the_selection() {
    let mut s = state();
    ev(
        &mut s,
        Event::Found(vec![
            found("/d/a.wav", MediaKind::Audio),
            found("/d/b.wav", MediaKind::Audio),
        ]),
    );
    for p in ["/d/a.wav", "/d/b.wav"] {
        let it = s.library.find_mut(Path::new(p)).unwrap();
        it.state = JobState::Done;
        it.progress = 1.0;
    }
    cmd(&mut s, Cmd::ToggleMark);
    cmd(&mut s, Cmd::ToggleMark);
    let fx = cmd(&mut s, Cmd::Enqueue);
    assert_eq!(
        fx,
        vec![Effect::Transcribe(vec![
            "/d/a.wav".into(),
            "/d/b.wav".into()
        ])]
    );
    assert!(s.library.marks.is_empty());
}

#[test]
fn clicks_map_rows_through_the_page_offset() {
    let mut s = state();
    let files: Vec<Found> = (0..30)
        .map(|i| found(&format!("/d/{i:02}.wav"), MediaKind::Audio))
        .collect();
    ev(&mut s, Event::Found(files));
    s.focus = Pane::Transcript;
    update(
        &mut s,
        Action::Click {
            pane: Pane::Queue,
            row: Some(3),
            height: 10,
        },
    );
    assert_eq!(s.focus, Pane::Queue);
    assert_eq!(s.library.cursor, 3);
    s.library.cursor = 25; // third page
    update(
        &mut s,
        Action::Click {
            pane: Pane::Queue,
            row: Some(2),
            height: 10,
        },
    );
    assert_eq!(s.library.cursor, 22);
    update(
        &mut s,
        Action::Scroll {
            pane: Pane::Queue,
            down: true,
        },
    );
    assert_eq!(s.library.cursor, 25);
}

#[test]
fn ten_thousand_items_move_and_filter() {
    let mut s = state();
    let files: Vec<Found> = (0..10_000)
        .map(|i| found(&format!("/d/{i:05}.wav"), MediaKind::Audio))
        .collect();
    ev(&mut s, Event::Found(files));
    cmd(&mut s, Cmd::Bottom);
    assert_eq!(s.library.cursor, 9_999);
    cmd(&mut s, Cmd::PageUp);
    assert!(s.library.cursor < 9_999);
}

// ---- transcript ----

fn with_transcript() -> AppState {
    let mut s = state();
    ev(
        &mut s,
        Event::Found(vec![found("/d/a.wav", MediaKind::Audio)]),
    );
    for (i, t) in [
        "hello there",
        "general kenobi",
        "you are a bold one",
        "hello again",
    ]
    .iter()
    .enumerate()
    {
        ev(
            &mut s,
            Event::Segment {
                path: "/d/a.wav".into(),
                segment: seg(i, i as f64 * 2.0, t),
            },
        );
    }
    s
}

#[test]
fn segments_stream_in_and_the_cursor_moves_and_jumps() {
    let mut s = with_transcript();
    assert_eq!(s.transcript.segments().len(), 4);
    cmd(&mut s, Cmd::FocusTranscript);
    cmd(&mut s, Cmd::Down);
    cmd(&mut s, Cmd::Down);
    assert_eq!(s.transcript.cursor, 2);
    cmd(&mut s, Cmd::Bottom);
    assert_eq!(s.transcript.cursor, 3);
    cmd(&mut s, Cmd::Down);
    assert_eq!(s.transcript.cursor, 3);
    cmd(&mut s, Cmd::Top);
    assert_eq!(s.transcript.cursor, 0);
}

#[test]
fn search_is_incremental_and_n_wraps() {
    let mut s = with_transcript();
    cmd(&mut s, Cmd::FocusTranscript);
    cmd(&mut s, Cmd::Search);
    typed(&mut s, "HELLO");
    assert_eq!(s.transcript.matches, vec![0, 3]);
    update(&mut s, Action::Text(TextKey::Enter));
    assert_eq!(s.mode, Mode::Normal);
    assert_eq!(s.transcript.cursor, 0);
    cmd(&mut s, Cmd::SearchNext);
    assert_eq!(s.transcript.cursor, 3);
    cmd(&mut s, Cmd::SearchNext);
    assert_eq!(s.transcript.cursor, 0);
    cmd(&mut s, Cmd::SearchPrev);
    assert_eq!(s.transcript.cursor, 3);
}

#[test]
fn edit_then_save_rewrites_with_the_new_text_only_after_the_job_is_done() {
    let mut s = with_transcript();
    cmd(&mut s, Cmd::FocusTranscript);
    cmd(&mut s, Cmd::Down);
    cmd(&mut s, Cmd::EditSegment);
    assert!(
        matches!(&s.mode, Mode::Prompt { kind: PromptKind::EditSegment, edit } if edit.text == "general kenobi")
    );
    for _ in 0..6 {
        update(&mut s, Action::Text(TextKey::Backspace));
    }
    typed(&mut s, "grievous");
    update(&mut s, Action::Text(TextKey::Enter));
    assert_eq!(s.transcript.segments()[1].text, " general grievous");
    assert!(s.transcript.doc().unwrap().modified);
    // While the job runs the edit is kept but not saved.
    assert!(cmd(&mut s, Cmd::Save).is_empty());
    // The finished transcript does not overwrite the edit.
    let mut t = s.transcript.doc().unwrap().transcript.clone();
    t.segments[1].text = " general kenobi".into();
    ev(
        &mut s,
        Event::TranscriptDone {
            path: "/d/a.wav".into(),
            transcript: t,
        },
    );
    let fx = cmd(&mut s, Cmd::Save);
    let saved = effects_of(&fx, |e| match e {
        Effect::SaveTranscript {
            media,
            transcript,
            formats,
        } => Some((media.clone(), transcript.clone(), formats.clone())),
        _ => None,
    });
    assert_eq!(saved.len(), 1);
    assert_eq!(saved[0].0, PathBuf::from("/d/a.wav"));
    assert_eq!(saved[0].1.segments[1].text, " general grievous");
    assert!(saved[0].1.text.contains("general grievous"));
    assert!(saved[0].2.is_empty());
    ev(
        &mut s,
        Event::Saved {
            path: "/d/a.wav".into(),
            files: vec!["/d/a.txt".into()],
        },
    );
    assert!(!s.transcript.doc().unwrap().modified);
}

#[test]
fn escape_abandons_an_edit() {
    let mut s = with_transcript();
    cmd(&mut s, Cmd::FocusTranscript);
    cmd(&mut s, Cmd::EditSegment);
    typed(&mut s, "xyz");
    update(&mut s, Action::Text(TextKey::Esc));
    assert_eq!(s.transcript.segments()[0].text, " hello there");
    assert_eq!(s.mode, Mode::Normal);
}

#[test]
fn space_plays_the_segment_and_again_stops_and_no_device_is_said_once() {
    let mut s = with_transcript();
    cmd(&mut s, Cmd::FocusTranscript);
    cmd(&mut s, Cmd::Down);
    let fx = cmd(&mut s, Cmd::PlaySegment);
    assert_eq!(
        fx,
        vec![Effect::Play {
            path: "/d/a.wav".into(),
            start: 2.0,
            end: 4.0
        }]
    );
    assert_eq!(cmd(&mut s, Cmd::PlaySegment), vec![Effect::StopPlayback]);
    cmd(&mut s, Cmd::PlaySegment);
    ev(
        &mut s,
        Event::AudioUnavailable("no audio output device".into()),
    );
    assert!(s
        .status
        .as_ref()
        .unwrap()
        .text
        .contains("no audio output device"));
    s.status = None;
    cmd(&mut s, Cmd::PlaySegment);
    ev(
        &mut s,
        Event::AudioUnavailable("no audio output device".into()),
    );
    assert_eq!(s.status, None, "said once");
}

#[test]
fn export_asks_for_formats() {
    let mut s = with_transcript();
    cmd(&mut s, Cmd::FocusTranscript);
    cmd(&mut s, Cmd::Export);
    for _ in 0..3 {
        update(&mut s, Action::Text(TextKey::Backspace));
    }
    typed(&mut s, "srt, vtt");
    let fx = update(&mut s, Action::Text(TextKey::Enter));
    assert!(fx.iter().any(|e| matches!(e, Effect::SaveTranscript { formats, .. } if formats == &vec!["srt".to_string(), "vtt".to_string()])));
}

// ---- tags ----

fn with_images(n: usize) -> AppState {
    let mut s = state();
    let files: Vec<Found> = (0..n)
        .map(|i| found(&format!("/i/{i}.png"), MediaKind::Image))
        .collect();
    ev(&mut s, Event::Found(files));
    for i in 0..n {
        let scores = vec![
            ("cat".to_string(), 0.6),
            ("dog".to_string(), 0.3),
            ("car".to_string(), 0.05),
            ("tree".to_string(), 0.05),
        ];
        ev(
            &mut s,
            Event::TagScores {
                path: format!("/i/{i}.png").into(),
                scores,
            },
        );
    }
    s.focus = Pane::Tags;
    s
}

#[test]
fn proposals_are_the_best_labels() {
    let s = with_images(1);
    assert_eq!(s.tags.items[0].tags(), vec!["cat", "dog", "car"]);
}

#[test]
fn visual_range_accept_reject_apply_and_undo() {
    let mut s = with_images(5);
    cmd(&mut s, Cmd::Down);
    cmd(&mut s, Cmd::VisualSelect);
    cmd(&mut s, Cmd::Down);
    cmd(&mut s, Cmd::Down);
    assert_eq!(s.tags.selection(), vec![1, 2, 3]);
    // Tag cursor to "dog", reject it for the range.
    cmd(&mut s, Cmd::TagNext);
    assert_eq!(s.tags.cursor_tag().as_deref(), Some("dog"));
    cmd(&mut s, Cmd::RejectTag);
    for i in [1, 2, 3] {
        assert_eq!(s.tags.items[i].tags(), vec!["cat", "car"], "item {i}");
    }
    assert_eq!(s.tags.items[0].tags(), vec!["cat", "dog", "car"]);
    // A custom tag for the same range.
    cmd(&mut s, Cmd::AddTag);
    typed(&mut s, "tabby");
    update(&mut s, Action::Text(TextKey::Enter));
    assert_eq!(s.tags.items[2].tags(), vec!["cat", "car", "tabby"]);
    let fx = cmd(&mut s, Cmd::ApplyTags);
    let writes = effects_of(&fx, |e| match e {
        Effect::WriteSidecars(w) => Some(w.clone()),
        _ => None,
    });
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].len(), 3);
    assert_eq!(
        writes[0][0],
        (
            PathBuf::from("/i/1.png"),
            Some(vec!["cat".into(), "car".into(), "tabby".into()])
        )
    );
    assert!(s.tags.selection().len() == 1, "apply ends the selection");
    // Applying again writes nothing new.
    s.tags.cursor = 1;
    assert!(!cmd(&mut s, Cmd::ApplyTags)
        .iter()
        .any(|e| matches!(e, Effect::WriteSidecars(_))));
    // Undo the apply: the sidecars had nothing before, so they are removed.
    let fx = cmd(&mut s, Cmd::Undo);
    assert_eq!(
        fx.iter().find(|e| matches!(e, Effect::WriteSidecars(_))),
        Some(&Effect::WriteSidecars(vec![
            (PathBuf::from("/i/1.png"), None),
            (PathBuf::from("/i/2.png"), None),
            (PathBuf::from("/i/3.png"), None),
        ]))
    );
    // Undo the custom tag, then the rejection.
    cmd(&mut s, Cmd::Undo);
    assert_eq!(s.tags.items[2].tags(), vec!["cat", "car"]);
    cmd(&mut s, Cmd::Undo);
    assert_eq!(s.tags.items[2].tags(), vec!["cat", "dog", "car"]);
    cmd(&mut s, Cmd::Undo);
    assert!(s.status.as_ref().unwrap().text.contains("nothing to undo"));
}

#[test]
fn undo_of_a_second_apply_restores_the_first_tags() {
    let mut s = with_images(1);
    let fx = cmd(&mut s, Cmd::ApplyTags);
    assert!(fx.iter().any(|e| matches!(e, Effect::WriteSidecars(_))));
    cmd(&mut s, Cmd::RejectTag); // rejects "cat"
    cmd(&mut s, Cmd::ApplyTags);
    let fx = cmd(&mut s, Cmd::Undo);
    assert!(fx.contains(&Effect::WriteSidecars(vec![(
        PathBuf::from("/i/0.png"),
        Some(vec!["cat".into(), "dog".into(), "car".into()])
    )])));
}

#[test]
fn marks_combine_and_escape_clears() {
    let mut s = with_images(4);
    cmd(&mut s, Cmd::ToggleMark); // marks 0, moves to 1
    cmd(&mut s, Cmd::Down); // 2
    cmd(&mut s, Cmd::ToggleMark); // marks 2
    assert_eq!(s.tags.selection(), vec![0, 2]);
    cmd(&mut s, Cmd::AcceptTag);
    assert!(s.tags.items[0].accepted.contains("cat") && s.tags.items[2].accepted.contains("cat"));
    assert!(!s.tags.items[1].accepted.contains("cat"));
    cmd(&mut s, Cmd::Cancel);
    assert_eq!(s.tags.selection(), vec![3]);
}

#[test]
fn label_set_switch_rescores_and_search_shows_results() {
    let mut s = with_images(2);
    ev(
        &mut s,
        Event::LabelSets(vec!["general".into(), "style".into()]),
    );
    let fx = cmd(&mut s, Cmd::NextLabelSet);
    assert!(fx.iter().any(|e| matches!(e, Effect::TagImages { label_set, paths } if label_set == "style" && paths.len() == 2)));
    assert!(s.tags.items.iter().all(|i| i.scores.is_empty()));
    cmd(&mut s, Cmd::Search);
    typed(&mut s, "a red car");
    let fx = update(&mut s, Action::Text(TextKey::Enter));
    assert!(fx.contains(&Effect::SearchIndex("a red car".into())));
    ev(
        &mut s,
        Event::SearchResults {
            title: "'a red car'".into(),
            hits: vec![("/i/1.png".into(), 0.3), ("/x/new.png".into(), 0.2)],
        },
    );
    assert_eq!(s.tags.shown(), vec![1, 2]);
    assert_eq!(s.tags.current().unwrap().path, Path::new("/i/1.png"));
    cmd(&mut s, Cmd::Cancel);
    assert_eq!(s.tags.shown().len(), 3);
    let fx = cmd(&mut s, Cmd::Similar);
    assert!(fx.contains(&Effect::Similar("/i/0.png".into())));
}

#[test]
fn the_preview_follows_the_tag_cursor() {
    let mut s = with_images(2);
    let fx = cmd(&mut s, Cmd::Down);
    assert_eq!(fx, vec![Effect::ShowImage(Some("/i/1.png".into()))]);
    assert!(
        cmd(&mut s, Cmd::Down).is_empty(),
        "same image: nothing to load"
    );
}

// ---- generate ----

fn generate_state() -> AppState {
    let mut s = state();
    s.focus = Pane::Generate;
    cmd(&mut s, Cmd::EditPrompt);
    typed(&mut s, "a lighthouse");
    update(&mut s, Action::Text(TextKey::Enter));
    s
}

fn requests(fx: &[Effect]) -> Vec<GenerateRequest> {
    effects_of(fx, |e| match e {
        Effect::Generate(r) => Some(r.clone()),
        _ => None,
    })
}

#[test]
fn unlocked_seed_changes_every_generation_and_prompt_edits_do_not_regenerate() {
    let mut s = generate_state();
    let a = requests(&cmd(&mut s, Cmd::Generate));
    let b = requests(&cmd(&mut s, Cmd::Generate));
    assert_eq!((a.len(), b.len()), (1, 1));
    assert_ne!(a[0].seed, b[0].seed);
    assert_ne!(a[0].id, b[0].id);
    cmd(&mut s, Cmd::EditPrompt);
    typed(&mut s, " at dusk");
    assert!(requests(&update(&mut s, Action::Text(TextKey::Enter))).is_empty());
}

#[test]
fn locked_seed_regenerates_prompt_edits_with_the_same_seed() {
    let mut s = generate_state();
    cmd(&mut s, Cmd::SeedLock);
    let seed = s.generate.params.seed;
    let first = requests(&cmd(&mut s, Cmd::Generate));
    assert_eq!(first[0].seed, seed);
    cmd(&mut s, Cmd::EditPrompt);
    typed(&mut s, " at dusk");
    let fx = update(&mut s, Action::Text(TextKey::Enter));
    let again = requests(&fx);
    assert_eq!(again.len(), 1, "a prompt edit regenerates");
    assert_eq!(again[0].seed, seed);
    assert_eq!(again[0].prompt, "a lighthouse at dusk");
    // The running one is cancelled first (latest request wins).
    assert!(fx.contains(&Effect::CancelGenerate(first[0].id)));
    // An unchanged prompt does not regenerate; negative prompt edits do.
    cmd(&mut s, Cmd::EditPrompt);
    assert!(requests(&update(&mut s, Action::Text(TextKey::Enter))).is_empty());
    cmd(&mut s, Cmd::EditNegative);
    typed(&mut s, "fog");
    assert_eq!(
        requests(&update(&mut s, Action::Text(TextKey::Enter)))[0].seed,
        seed
    );
    // Seed +1 / -1 move the locked seed.
    cmd(&mut s, Cmd::SeedUp);
    cmd(&mut s, Cmd::SeedUp);
    cmd(&mut s, Cmd::SeedDown);
    assert_eq!(requests(&cmd(&mut s, Cmd::Generate))[0].seed, seed + 1);
}

#[test]
fn runner_failure_is_shown_and_history_restore_and_compare_work() {
    let mut s = generate_state();
    let r = requests(&cmd(&mut s, Cmd::Generate)).remove(0);
    ev(
        &mut s,
        Event::GenerateFailed {
            id: r.id,
            error: "Stable Diffusion is not available in this build".into(),
        },
    );
    assert!(matches!(s.generate.history[0].status, GenStatus::Failed(_)));
    assert!(s.status.as_ref().unwrap().error);
    // Change parameters, generate again, then restore the first.
    s.generate.field = Field::ALL.iter().position(|f| *f == Field::Steps).unwrap();
    cmd(&mut s, Cmd::Increase);
    let r2 = requests(&cmd(&mut s, Cmd::Generate)).remove(0);
    assert_eq!(r2.steps, r.steps + 1);
    ev(
        &mut s,
        Event::GenerateProgress {
            id: r2.id,
            step: 3,
            total: r2.steps,
            preview: None,
        },
    );
    assert_eq!(
        s.generate.history[1].status,
        GenStatus::Running {
            step: 3,
            total: r2.steps
        }
    );
    assert_eq!(
        cmd(&mut s, Cmd::CancelGenerate),
        vec![Effect::CancelGenerate(r2.id)]
    );
    cmd(&mut s, Cmd::HistoryPrev);
    cmd(&mut s, Cmd::Restore);
    assert_eq!(s.generate.params.steps, r.steps);
    assert_eq!(s.generate.params.seed, r.seed);
    cmd(&mut s, Cmd::Compare);
    assert_eq!(s.generate.compare, Some((0, 1)));
    cmd(&mut s, Cmd::Cancel);
    assert_eq!(s.generate.compare, None);
}

#[test]
fn field_edits_validate_and_reach_the_request() {
    let mut s = generate_state();
    let at = |f: Field| Field::ALL.iter().position(|x| *x == f).unwrap();
    s.generate.field = at(Field::Width);
    cmd(&mut s, Cmd::EditField);
    typed(&mut s, "3");
    update(&mut s, Action::Text(TextKey::Enter));
    assert!(
        s.status.as_ref().unwrap().error,
        "5123 is not a multiple of 8"
    );
    assert_eq!(s.generate.params.width, 512);
    s.generate.field = at(Field::Loras);
    cmd(&mut s, Cmd::EditField);
    typed(&mut s, "film-grain:0.6, ink");
    update(&mut s, Action::Text(TextKey::Enter));
    s.generate.field = at(Field::Scheduler);
    cmd(&mut s, Cmd::Increase);
    s.generate
        .set_field(Field::ControlnetModel, "canny")
        .unwrap();
    s.generate
        .set_field(Field::ControlnetImage, "/c/edges.png")
        .unwrap();
    s.generate
        .set_field(Field::InitImage, "/c/init.png")
        .unwrap();
    s.generate.set_field(Field::VariationSeed, "7").unwrap();
    let r = requests(&cmd(&mut s, Cmd::Generate)).remove(0);
    assert_eq!(
        r.loras,
        vec![("film-grain".to_string(), 0.6), ("ink".to_string(), 1.0)]
    );
    // The next scheduler in the engine's table after the default euler-a.
    let names = generate::schedulers();
    let at_default = names.iter().position(|n| *n == "euler-a").unwrap();
    assert_eq!(r.scheduler, names[at_default + 1]);
    assert_eq!(
        r.controlnet,
        Some(("canny".to_string(), PathBuf::from("/c/edges.png")))
    );
    assert_eq!(r.init_image, Some(PathBuf::from("/c/init.png")));
    assert_eq!(r.variation_seed, Some(7));
}

#[test]
fn no_prompt_no_generation() {
    let mut s = state();
    s.focus = Pane::Generate;
    assert!(requests(&cmd(&mut s, Cmd::Generate)).is_empty());
}

#[test]
fn configured_defaults_fill_the_pane_and_values_it_refuses_are_ignored() {
    let mut s = generate_state();
    let mut d = generate::Defaults {
        model: "tiny".into(),
        steps: 3,
        guidance: 5.0,
        scheduler: "dpmpp-2m-karras".into(),
        width: 64,
        height: 0,
    };
    s.generate.apply_defaults(&d);
    let r = requests(&cmd(&mut s, Cmd::Generate)).remove(0);
    assert_eq!(
        (r.model.as_str(), r.steps, r.guidance, r.scheduler.as_str()),
        ("tiny", 3, 5.0, "dpmpp-2m-karras")
    );
    assert_eq!((r.width, r.height), (64, 512), "height 0: the pane's own");
    d.scheduler = "heun2".into();
    d.width = 100;
    d.steps = 0;
    s.generate.apply_defaults(&d);
    let p = &s.generate.params;
    assert_eq!(
        (p.scheduler.as_str(), p.width, p.steps),
        ("dpmpp-2m-karras", 64, 3)
    );
}

#[test]
fn live_previews_show_while_sampling_then_the_png() {
    let mut s = generate_state();
    let r = requests(&cmd(&mut s, Cmd::Generate)).remove(0);
    let step = |s: &mut AppState, n: u32, preview: Option<&str>| {
        ev(
            s,
            Event::GenerateProgress {
                id: r.id,
                step: n,
                total: r.steps,
                preview: preview.map(PathBuf::from),
            },
        )
    };
    let show = |p: &str| Effect::ShowImage(Some(PathBuf::from(p)));
    assert_eq!(
        step(&mut s, 1, Some("/tmp/p/1-0001.png")),
        vec![show("/tmp/p/1-0001.png")]
    );
    // A step without a preview keeps the last one on screen.
    assert!(step(&mut s, 2, None).is_empty());
    assert_eq!(s.preview, Some(PathBuf::from("/tmp/p/1-0001.png")));
    assert_eq!(
        step(&mut s, 3, Some("/tmp/p/1-0003.png")),
        vec![show("/tmp/p/1-0003.png")]
    );
    let fx = ev(
        &mut s,
        Event::GenerateDone {
            id: r.id,
            image: PathBuf::from("/out/00000-1.png"),
        },
    );
    assert_eq!(fx, vec![show("/out/00000-1.png")]);
    assert_eq!(
        s.generate.history[0].status,
        GenStatus::Done(PathBuf::from("/out/00000-1.png"))
    );
}

#[test]
fn a_cancelled_generation_is_marked_and_is_not_an_error() {
    let mut s = generate_state();
    let r = requests(&cmd(&mut s, Cmd::Generate)).remove(0);
    assert_eq!(
        cmd(&mut s, Cmd::CancelGenerate),
        vec![Effect::CancelGenerate(r.id)]
    );
    ev(&mut s, Event::GenerateCancelled { id: r.id });
    assert_eq!(s.generate.history[0].status, GenStatus::Cancelled);
    assert!(s.last_error.is_none());
    assert!(s.generate.running().is_none());
    assert!(requests(&cmd(&mut s, Cmd::CancelGenerate)).is_empty());
}

#[test]
fn memory_samples_reach_the_status_bar_state() {
    let mut s = state();
    assert_eq!(s.memory, None);
    let m = Memory {
        used: 1 << 30,
        total: 8 << 30,
        gpu: true,
    };
    assert!(ev(&mut s, Event::Memory(m)).is_empty());
    assert_eq!(s.memory, Some(m));
}

// ---- global ----

#[test]
fn palette_filters_and_runs_a_command() {
    let mut s = state();
    cmd(&mut s, Cmd::Palette);
    typed(&mut s, "focus-tags");
    update(&mut s, Action::Text(TextKey::Enter));
    assert_eq!(s.focus, Pane::Tags);
    assert_eq!(s.mode, Mode::Normal);
    cmd(&mut s, Cmd::Palette);
    typed(&mut s, "theme");
    let fx = update(&mut s, Action::Text(TextKey::Enter));
    assert_eq!(fx, vec![Effect::LoadTheme("light".into())]);
}

#[test]
fn focus_cycles_and_help_closes_on_any_key() {
    let mut s = state();
    cmd(&mut s, Cmd::FocusPrev);
    assert_eq!(s.focus, Pane::Preview);
    cmd(&mut s, Cmd::FocusNext);
    assert_eq!(s.focus, Pane::Queue);
    cmd(&mut s, Cmd::Help);
    assert!(s.wants_text());
    update(&mut s, Action::Text(TextKey::Char('j')));
    assert_eq!(s.mode, Mode::Help { scroll: 1 });
    update(&mut s, Action::Text(TextKey::Esc));
    assert_eq!(s.mode, Mode::Normal);
    assert_eq!(cmd(&mut s, Cmd::Quit), vec![Effect::Quit]);
    assert!(s.quit);
}

#[test]
fn every_command_has_a_unique_name_and_round_trips() {
    let mut names = std::collections::HashSet::new();
    for c in Cmd::ALL {
        assert!(names.insert(c.name()), "{} twice", c.name());
        assert_eq!(Cmd::from_name(c.name()), Some(*c));
        assert!(!c.description().is_empty());
    }
    assert_eq!(ACTIONS.len(), Cmd::ALL.len());
}

// ---- speakers ----

fn spk(id: usize, start: f64, end: f64, speaker: Option<&str>) -> Segment {
    Segment {
        end,
        speaker: speaker.map(str::to_string),
        words: Some(vec![crate::transcript::Word {
            word: format!(" w{id}"),
            start,
            end,
            probability: 0.9,
            speaker: speaker.map(str::to_string),
        }]),
        ..seg(id, start, &format!("line {id}"))
    }
}

#[test]
fn turns_of_a_speaker_join_their_runs_and_split_where_another_speaks() {
    let a = Some("SPEAKER_00");
    let b = Some("SPEAKER_01");
    let segments = [
        spk(0, 0.0, 2.0, a),
        spk(1, 2.5, 4.0, a),  // 0.5 s pause: the same turn
        spk(2, 4.2, 6.0, b),  // someone else
        spk(3, 6.1, 7.0, a),  // a new turn
        spk(4, 9.0, 10.0, a), // 2 s of silence: a new turn
        spk(5, 10.1, 10.7, None),
        spk(6, 10.8, 12.0, a), // an unlabelled segment between does not split
    ];
    assert_eq!(
        turns_of(&segments, "SPEAKER_00"),
        vec![(0.0, 4.0), (6.1, 7.0), (9.0, 12.0)]
    );
    assert_eq!(turns_of(&segments, "SPEAKER_01"), vec![(4.2, 6.0)]);
    assert!(turns_of(&segments, "nobody").is_empty());
    assert_eq!(speakers_of(&segments), vec!["SPEAKER_00", "SPEAKER_01"]);
}

fn with_speakers() -> AppState {
    let mut s = state();
    ev(
        &mut s,
        Event::Found(vec![found("/d/talk.wav", MediaKind::Audio)]),
    );
    let (a, b) = (Some("SPEAKER_00"), Some("SPEAKER_01"));
    let segments = vec![
        spk(0, 0.0, 2.0, a),
        spk(1, 2.5, 4.0, b),
        spk(2, 4.5, 6.0, a),
        spk(3, 6.5, 8.0, b),
    ];
    ev(
        &mut s,
        Event::TranscriptDone {
            path: "/d/talk.wav".into(),
            transcript: Transcript {
                text: String::new(),
                segments,
                language: "en".into(),
            },
        },
    );
    cmd(&mut s, Cmd::FocusTranscript);
    s
}

#[test]
fn rename_relabels_every_turn_and_rewrites_the_files() {
    let mut s = with_speakers();
    cmd(&mut s, Cmd::Down);
    cmd(&mut s, Cmd::RenameSpeaker);
    assert!(
        matches!(&s.mode, Mode::Prompt { kind: PromptKind::RenameSpeaker, edit } if edit.text == "SPEAKER_01")
    );
    for _ in 0.."SPEAKER_01".len() {
        update(&mut s, Action::Text(TextKey::Backspace));
    }
    typed(&mut s, " Bob ");
    let fx = update(&mut s, Action::Text(TextKey::Enter));
    let saved = effects_of(&fx, |e| match e {
        Effect::SaveTranscript {
            transcript,
            formats,
            ..
        } => Some((transcript.clone(), formats.clone())),
        _ => None,
    });
    assert_eq!(saved.len(), 1, "{fx:?}");
    let t = &saved[0].0;
    let names: Vec<Option<&str>> = t.segments.iter().map(|s| s.speaker.as_deref()).collect();
    assert_eq!(
        names,
        vec![
            Some("SPEAKER_00"),
            Some("Bob"),
            Some("SPEAKER_00"),
            Some("Bob")
        ]
    );
    assert_eq!(
        t.segments[3].words.as_ref().unwrap()[0].speaker.as_deref(),
        Some("Bob")
    );
    assert!(saved[0].1.is_empty(), "every configured format");
    // an empty name renames nothing
    cmd(&mut s, Cmd::RenameSpeaker);
    for _ in 0..3 {
        update(&mut s, Action::Text(TextKey::Backspace));
    }
    let fx = update(&mut s, Action::Text(TextKey::Enter));
    assert!(fx
        .iter()
        .all(|e| !matches!(e, Effect::SaveTranscript { .. })));
    assert_eq!(s.transcript.segments()[1].speaker.as_deref(), Some("Bob"));
}

#[test]
fn filter_shows_one_speaker_and_again_all() {
    let mut s = with_speakers();
    cmd(&mut s, Cmd::FilterSpeaker);
    assert_eq!(s.transcript.rows(), vec![0, 2]);
    cmd(&mut s, Cmd::Down);
    assert_eq!(s.transcript.cursor, 2);
    cmd(&mut s, Cmd::Down);
    assert_eq!(s.transcript.cursor, 2, "the last shown line");
    // a click on the first line of the filtered list
    update(
        &mut s,
        Action::Click {
            pane: Pane::Transcript,
            row: Some(0),
            height: 10,
        },
    );
    assert_eq!(s.transcript.cursor, 0);
    cmd(&mut s, Cmd::FilterSpeaker);
    assert_eq!(s.transcript.rows(), vec![0, 1, 2, 3]);
    // a transcript without speakers has nothing to filter by
    let mut plain = with_transcript();
    cmd(&mut plain, Cmd::FocusTranscript);
    cmd(&mut plain, Cmd::FilterSpeaker);
    assert_eq!(plain.transcript.rows().len(), 4);
    assert!(plain.status.as_ref().unwrap().text.contains("diarize"));
}

#[test]
fn play_speaker_plays_their_turns_and_diarize_queues_the_file() {
    let mut s = with_speakers();
    let fx = cmd(&mut s, Cmd::PlaySpeaker);
    assert_eq!(
        fx,
        vec![Effect::PlayTurns {
            path: "/d/talk.wav".into(),
            turns: vec![(0.0, 2.0), (4.5, 6.0)],
        }]
    );
    // the highlight follows playback into the next turn
    ev(
        &mut s,
        Event::PlaybackPosition {
            path: "/d/talk.wav".into(),
            seconds: 5.0,
        },
    );
    assert_eq!(s.transcript.playing.as_ref().map(|p| p.1), Some(2));
    assert_eq!(cmd(&mut s, Cmd::PlaySpeaker), vec![Effect::StopPlayback]);
    assert_eq!(
        cmd(&mut s, Cmd::Diarize),
        vec![Effect::Diarize("/d/talk.wav".into())]
    );
}
