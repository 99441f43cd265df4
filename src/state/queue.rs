//! The queue pane's commands (its list is `library::Library`).
use super::{
    clamp_move, open_prompt, AppState, Cmd, Effect, JobState, MediaKind, Pane, PromptKind,
};

pub(super) fn queue_command(state: &mut AppState, cmd: Cmd, effects: &mut Vec<Effect>) {
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
