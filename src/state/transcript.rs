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

    pub fn show(&mut self, path: PathBuf) {
        if self.path.as_ref() != Some(&path) {
            self.path = Some(path);
            self.cursor = 0;
            self.update_matches();
        }
    }

    pub fn move_by(&mut self, delta: isize) {
        let n = self.segments().len();
        if n == 0 {
            self.cursor = 0;
            return;
        }
        self.cursor = (self.cursor as isize + delta).clamp(0, n as isize - 1) as usize;
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
                .filter(|(_, s)| s.text.to_lowercase().contains(&needle))
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

pub(super) fn transcript_command(state: &mut AppState, cmd: Cmd, effects: &mut Vec<Effect>) {
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
