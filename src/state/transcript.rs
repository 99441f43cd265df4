//! The transcript pane: live segments of the selected file, navigation, search and edits.
use crate::transcript::{Segment, Transcript};
use std::collections::HashMap;
use std::path::PathBuf;

use super::{open_prompt, AppState, Cmd, Effect, PromptKind};

/// One file's transcript as the pane knows it.
#[derive(Debug, Clone, Default)]
pub struct Doc {
    pub transcript: Transcript,
    /// True once the job finished (the output files exist).
    pub complete: bool,
    /// Edited since the last save.
    pub modified: bool,
}

#[derive(Debug, Clone, Default)]
pub struct TranscriptPane {
    pub docs: HashMap<PathBuf, Doc>,
    /// The file shown.
    pub path: Option<PathBuf>,
    pub cursor: usize,
    pub search: String,
    /// Segment indices matching `search`.
    pub matches: Vec<usize>,
    /// Playback: (file, segment, position in seconds).
    pub playing: Option<(PathBuf, usize, f64)>,
    /// Only this speaker's segments are shown (`filter-speaker`).
    pub speaker_filter: Option<String>,
    /// The speaker the rename prompt is renaming.
    pub renaming: Option<String>,
}

/// Two of a speaker's segments with less silence than this between them (and no one else
/// speaking) are one turn when their turns are played.
pub const TURN_JOIN_GAP: f64 = 1.0;

/// The spans (start, end) in which `speaker` talks: runs of their consecutive segments, joined
/// across pauses under [`TURN_JOIN_GAP`] seconds, split where anyone else speaks.
pub fn turns_of(segments: &[Segment], speaker: &str) -> Vec<(f64, f64)> {
    let mut turns: Vec<(f64, f64)> = Vec::new();
    let mut open = false;
    for seg in segments {
        if seg.speaker.as_deref() != Some(speaker) {
            // a segment without a speaker (not diarized) does not end a turn
            open &= seg.speaker.is_none();
            continue;
        }
        match turns.last_mut() {
            Some(last) if open && seg.start - last.1 < TURN_JOIN_GAP => {
                last.1 = last.1.max(seg.end)
            }
            _ => turns.push((seg.start, seg.end)),
        }
        open = true;
    }
    turns
}

/// The speakers of `segments` in order of first appearance (their colour order).
pub fn speakers_of(segments: &[Segment]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for s in segments.iter().filter_map(|s| s.speaker.as_deref()) {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

impl TranscriptPane {
    pub fn doc(&self) -> Option<&Doc> {
        self.path.as_ref().and_then(|p| self.docs.get(p))
    }

    pub fn segments(&self) -> &[Segment] {
        self.doc().map_or(&[], |d| d.transcript.segments.as_slice())
    }

    pub fn current(&self) -> Option<&Segment> {
        self.segments().get(self.cursor)
    }

    fn shown(&self, seg: &Segment) -> bool {
        self.speaker_filter
            .as_deref()
            .is_none_or(|f| seg.speaker.as_deref() == Some(f))
    }

    /// The indices of the segments shown: every one, or the filtered speaker's.
    pub fn rows(&self) -> Vec<usize> {
        self.segments()
            .iter()
            .enumerate()
            .filter(|(_, s)| self.shown(s))
            .map(|(i, _)| i)
            .collect()
    }

    /// The cursor's line among [`Self::rows`].
    pub fn cursor_row(&self) -> usize {
        let rows = self.rows();
        rows.iter()
            .position(|&i| i >= self.cursor)
            .unwrap_or(rows.len().saturating_sub(1))
    }

    /// The speakers of the shown file, in order of first appearance.
    pub fn speakers(&self) -> Vec<&str> {
        speakers_of(self.segments())
    }

    pub fn show(&mut self, path: PathBuf) {
        if self.path.as_ref() != Some(&path) {
            self.path = Some(path);
            self.cursor = 0;
            self.speaker_filter = None;
            self.update_matches();
        }
    }

    /// Moves the cursor `delta` shown lines.
    pub fn move_by(&mut self, delta: isize) {
        let rows = self.rows();
        if rows.is_empty() {
            self.cursor = 0;
            return;
        }
        let at = self.cursor_row() as isize;
        let to = (at + delta).clamp(0, rows.len() as isize - 1) as usize;
        self.cursor = rows[to];
    }

    /// Playback reached `seconds` of `path`: the highlight follows it into the segment that
    /// holds it (a speaker's turns play several).
    pub fn played(&mut self, path: &std::path::Path, seconds: f64) {
        let at = self
            .segments()
            .iter()
            .position(|s| seconds >= s.start && seconds < s.end);
        if let Some((p, seg, pos)) = self.playing.as_mut() {
            if p == path {
                *pos = seconds;
                if let Some(i) = at {
                    *seg = i;
                }
            }
        }
    }

    /// Renames speaker `old` to `new` in every segment and word; false when nothing changed.
    pub fn rename_speaker(&mut self, old: &str, new: &str) -> bool {
        let Some(doc) = self.path.as_ref().and_then(|p| self.docs.get_mut(p)) else {
            return false;
        };
        let mut changed = false;
        for seg in &mut doc.transcript.segments {
            if seg.speaker.as_deref() == Some(old) {
                seg.speaker = Some(new.to_string());
                changed = true;
            }
            for w in seg.words.iter_mut().flatten() {
                if w.speaker.as_deref() == Some(old) {
                    w.speaker = Some(new.to_string());
                    changed = true;
                }
            }
        }
        if changed {
            doc.modified = true;
            if self.speaker_filter.as_deref() == Some(old) {
                self.speaker_filter = Some(new.to_string());
            }
        }
        changed
    }

    pub fn push_segment(&mut self, path: PathBuf, seg: Segment) {
        let doc = self.docs.entry(path).or_default();
        doc.transcript.segments.push(seg);
        self.update_matches();
    }

    /// A job (re)starts on `path`: its streamed segments start over (unsaved edits stay).
    pub fn restart(&mut self, path: &std::path::Path) {
        if let Some(doc) = self.docs.get_mut(path) {
            if !doc.modified {
                doc.transcript.segments.clear();
                doc.complete = false;
            }
        }
        self.update_matches();
        let n = self.segments().len();
        self.cursor = self.cursor.min(n.saturating_sub(1));
    }

    pub fn set_transcript(&mut self, path: PathBuf, transcript: Transcript) {
        let doc = self.docs.entry(path).or_default();
        // Keep the user's unsaved edits over a reload.
        if !doc.modified {
            doc.transcript = transcript;
        }
        doc.complete = true;
        self.update_matches();
        let n = self.segments().len();
        self.cursor = self.cursor.min(n.saturating_sub(1));
    }

    pub fn update_matches(&mut self) {
        let needle = self.search.to_lowercase();
        self.matches = if needle.is_empty() {
            Vec::new()
        } else {
            self.segments()
                .iter()
                .enumerate()
                .filter(|(_, s)| self.shown(s) && s.text.to_lowercase().contains(&needle))
                .map(|(i, _)| i)
                .collect()
        };
    }

    /// Moves to the next (or previous) match after the cursor, wrapping.
    pub fn jump_match(&mut self, forward: bool) -> bool {
        let next = if forward {
            self.matches
                .iter()
                .find(|&&m| m > self.cursor)
                .or(self.matches.first())
        } else {
            self.matches
                .iter()
                .rev()
                .find(|&&m| m < self.cursor)
                .or(self.matches.last())
        };
        match next {
            Some(&m) => {
                self.cursor = m;
                true
            }
            None => false,
        }
    }

    /// Replaces the text of the segment under the cursor; returns false when nothing changed.
    pub fn edit_current(&mut self, text: &str) -> bool {
        let cursor = self.cursor;
        let Some(doc) = self.path.as_ref().and_then(|p| self.docs.get_mut(p)) else {
            return false;
        };
        let Some(seg) = doc.transcript.segments.get_mut(cursor) else {
            return false;
        };
        // Whisper's segment texts start with a space; keep that so the writers match openai's.
        let new = format!(" {}", text.trim());
        if seg.text == new {
            return false;
        }
        seg.text = new;
        // Word timings no longer describe the new text.
        seg.words = None;
        doc.transcript.text = doc
            .transcript
            .segments
            .iter()
            .map(|s| s.text.as_str())
            .collect();
        doc.modified = true;
        self.update_matches();
        true
    }
}

// The pane's commands, called by the reducer (`super::update`).

const NO_SPEAKER: &str = "no speaker here: diarize the transcript first (D)";

/// Commits the rename prompt: every turn of the speaker takes `text`, and a finished
/// transcript's files are rewritten.
pub(super) fn rename_speaker(state: &mut AppState, text: &str, effects: &mut Vec<Effect>) {
    let Some(old) = state.transcript.renaming.take() else {
        return;
    };
    let new = text.trim();
    if new.is_empty() {
        return state.info("a speaker needs a name: nothing renamed");
    }
    if new == old || !state.transcript.rename_speaker(&old, new) {
        return;
    }
    let t = &state.transcript;
    match (t.path.clone(), t.doc()) {
        (Some(media), Some(doc)) if doc.complete => {
            effects.push(Effect::SaveTranscript {
                media,
                transcript: doc.transcript.clone(),
                formats: Vec::new(),
            });
            state.info(format!(
                "renamed {old} to {new}: rewriting every output format"
            ));
        }
        _ => state.info(format!(
            "renamed {old} to {new}: save (w) when the transcript is done"
        )),
    }
}

pub(super) fn transcript_command(state: &mut AppState, cmd: Cmd, effects: &mut Vec<Effect>) {
    let page = state.page();
    let t = &mut state.transcript;
    match cmd {
        Cmd::Down => t.move_by(1),
        Cmd::Up => t.move_by(-1),
        Cmd::PageDown => t.move_by(page),
        Cmd::PageUp => t.move_by(-page),
        Cmd::Top => t.move_by(-(isize::MAX / 2)),
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
            t.speaker_filter = None;
            t.update_matches();
        }
        Cmd::RenameSpeaker => match t.current().and_then(|s| s.speaker.clone()) {
            Some(name) => {
                t.renaming = Some(name.clone());
                open_prompt(state, PromptKind::RenameSpeaker, &name);
            }
            None => state.info(NO_SPEAKER),
        },
        Cmd::FilterSpeaker => {
            if t.speaker_filter.take().is_none() {
                match t.current().and_then(|s| s.speaker.clone()) {
                    Some(name) => t.speaker_filter = Some(name),
                    None => state.info(NO_SPEAKER),
                }
            }
            let t = &mut state.transcript;
            t.update_matches();
            // keep the cursor on a shown line
            t.move_by(0);
        }
        Cmd::PlaySpeaker => {
            let (Some(path), Some(name)) =
                (t.path.clone(), t.current().and_then(|s| s.speaker.clone()))
            else {
                return state.info(NO_SPEAKER);
            };
            if t.playing.take().is_some() {
                effects.push(Effect::StopPlayback);
                return;
            }
            let turns = turns_of(t.segments(), &name);
            if let Some(&(start, _)) = turns.first() {
                let first = t.segments().iter().position(|s| s.start >= start);
                t.playing = Some((path.clone(), first.unwrap_or(t.cursor), start));
                effects.push(Effect::PlayTurns { path, turns });
                state.info(format!("playing every turn of {name}"));
            }
        }
        Cmd::Diarize => {
            let Some(path) = t.path.clone() else { return };
            let busy = state
                .library
                .items
                .iter()
                .find(|i| i.path == path)
                .is_some_and(|i| i.state.is_active());
            if busy {
                state.info("the file is being transcribed: diarize it when that is done");
            } else if t.doc().is_some_and(|d| d.modified) {
                state.info("the transcript has unsaved edits: save them (w) first, diarizing transcribes the file again");
            } else {
                t.speaker_filter = None;
                effects.push(Effect::Diarize(path));
                state.info("diarizing: the file is transcribed again with its speakers");
            }
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
