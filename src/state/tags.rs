//! The tags pane: CLIP tags for a batch of images, reviewed with the keyboard, then applied.
use std::collections::BTreeSet;
use std::path::PathBuf;

use super::{open_prompt, AppState, Cmd, Effect, PromptKind};

/// How many of the best-scoring labels are proposed as tags.
pub const PROPOSED: usize = 3;
/// How many scored labels the tag cursor walks over.
pub const CANDIDATES: usize = 8;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TagItem {
    pub path: PathBuf,
    /// (label, probability), best first, for the current label set.
    pub scores: Vec<(String, f32)>,
    pub accepted: BTreeSet<String>,
    pub rejected: BTreeSet<String>,
    /// The tags last written to this image's sidecar (None: never written).
    pub applied: Option<Vec<String>>,
    pub error: Option<String>,
}

impl TagItem {
    pub fn new(path: PathBuf) -> Self {
        TagItem {
            path,
            ..TagItem::default()
        }
    }

    /// The tags this image would get: the proposals and accepted tags, minus rejected ones.
    pub fn tags(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let proposals = self.scores.iter().take(PROPOSED).map(|(l, _)| l);
        for t in proposals.chain(self.accepted.iter()) {
            if !self.rejected.contains(t) && !out.contains(t) {
                out.push(t.clone());
            }
        }
        out
    }

    /// What the tag cursor walks: the best labels, then custom tags.
    pub fn candidates(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .scores
            .iter()
            .take(CANDIDATES)
            .map(|(l, _)| l.clone())
            .collect();
        for t in &self.accepted {
            if !out.contains(t) {
                out.push(t.clone());
            }
        }
        out
    }

    pub fn score(&self, label: &str) -> Option<f32> {
        self.scores
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, s)| *s)
    }

    pub fn pending(&self) -> bool {
        self.applied.as_ref() != Some(&self.tags())
    }
}

/// One step `undo` reverts.
#[derive(Debug, Clone, PartialEq)]
pub enum UndoStep {
    /// Tag edits: the items as they were.
    Edit(Vec<(usize, TagItem)>),
    /// A write to sidecars: each file's tags before it (None: there was no sidecar).
    Apply(Vec<(usize, Option<Vec<String>>)>),
}

#[derive(Debug, Clone, Default)]
pub struct TagsPane {
    pub items: Vec<TagItem>,
    /// Shown order (indices into `items`) and the score of a search, when a search is shown.
    pub results: Option<(String, Vec<(usize, f32)>)>,
    pub cursor: usize,
    pub marks: BTreeSet<usize>,
    /// Visual range anchor (a position in the shown list).
    pub anchor: Option<usize>,
    pub tag_cursor: usize,
    pub label_sets: Vec<String>,
    pub label_set: usize,
    pub undo: Vec<UndoStep>,
    /// Images being scored.
    pub busy: bool,
}

impl TagsPane {
    /// Item indices in the shown order.
    pub fn shown(&self) -> Vec<usize> {
        match &self.results {
            Some((_, r)) => r.iter().map(|(i, _)| *i).collect(),
            None => (0..self.items.len()).collect(),
        }
    }

    pub fn current_index(&self) -> Option<usize> {
        self.shown().get(self.cursor).copied()
    }

    pub fn current(&self) -> Option<&TagItem> {
        self.current_index().and_then(|i| self.items.get(i))
    }

    pub fn label_set_name(&self) -> &str {
        self.label_sets
            .get(self.label_set)
            .map_or("general", String::as_str)
    }

    pub fn index_of(&mut self, path: &std::path::Path) -> usize {
        match self.items.iter().position(|i| i.path == path) {
            Some(i) => i,
            None => {
                self.items.push(TagItem::new(path.to_path_buf()));
                self.items.len() - 1
            }
        }
    }

    /// The selection: the visual range, plus marked items, else the item under the cursor.
    pub fn selection(&self) -> Vec<usize> {
        let shown = self.shown();
        let mut sel: BTreeSet<usize> = self.marks.clone();
        if let Some(anchor) = self.anchor {
            let (a, b) = (anchor.min(self.cursor), anchor.max(self.cursor));
            sel.extend(shown.iter().skip(a).take(b - a + 1).copied());
        }
        if sel.is_empty() {
            sel.extend(self.current_index());
        }
        sel.into_iter().collect()
    }

    pub fn is_selected(&self, item: usize) -> bool {
        if self.marks.contains(&item) {
            return true;
        }
        let Some(anchor) = self.anchor else {
            return false;
        };
        let (a, b) = (anchor.min(self.cursor), anchor.max(self.cursor));
        self.shown()
            .iter()
            .position(|&i| i == item)
            .is_some_and(|p| p >= a && p <= b)
    }

    pub fn move_by(&mut self, delta: isize) {
        let n = self.shown().len();
        if n == 0 {
            self.cursor = 0;
            return;
        }
        self.cursor = (self.cursor as isize + delta).clamp(0, n as isize - 1) as usize;
        self.tag_cursor = 0;
    }

    pub fn toggle_mark(&mut self) {
        if let Some(i) = self.current_index() {
            if !self.marks.remove(&i) {
                self.marks.insert(i);
            }
        }
    }

    /// Starts a visual range, or ends it by marking its items.
    pub fn visual(&mut self) {
        match self.anchor.take() {
            None => self.anchor = Some(self.cursor),
            Some(anchor) => {
                let shown = self.shown();
                let (a, b) = (anchor.min(self.cursor), anchor.max(self.cursor));
                self.marks
                    .extend(shown.iter().skip(a).take(b - a + 1).copied());
            }
        }
    }

    pub fn clear_selection(&mut self) {
        self.marks.clear();
        self.anchor = None;
    }

    /// The tag under the tag cursor.
    pub fn cursor_tag(&self) -> Option<String> {
        self.current()?.candidates().get(self.tag_cursor).cloned()
    }

    pub fn move_tag(&mut self, delta: isize) {
        let n = self.current().map_or(0, |c| c.candidates().len());
        if n > 0 {
            self.tag_cursor = (self.tag_cursor as isize + delta).rem_euclid(n as isize) as usize;
        }
    }

    fn edit(&mut self, f: impl Fn(&mut TagItem)) -> bool {
        let sel = self.selection();
        let before: Vec<(usize, TagItem)> = sel
            .iter()
            .filter_map(|&i| self.items.get(i).map(|it| (i, it.clone())))
            .collect();
        for &i in &sel {
            if let Some(it) = self.items.get_mut(i) {
                f(it);
            }
        }
        let changed = before.iter().any(|(i, b)| self.items.get(*i) != Some(b));
        if changed {
            self.undo.push(UndoStep::Edit(before));
        }
        changed
    }

    /// Accepts `tag` for the whole selection.
    pub fn accept(&mut self, tag: &str) -> bool {
        self.edit(|it| {
            it.rejected.remove(tag);
            it.accepted.insert(tag.to_string());
        })
    }

    /// Rejects `tag` for the whole selection.
    pub fn reject(&mut self, tag: &str) -> bool {
        self.edit(|it| {
            it.accepted.remove(tag);
            it.rejected.insert(tag.to_string());
        })
    }

    /// The writes `apply` needs: (item, tags) for every selected item whose tags changed.
    pub fn apply(&mut self) -> Vec<(PathBuf, Vec<String>)> {
        let mut before = Vec::new();
        let mut writes = Vec::new();
        for i in self.selection() {
            let Some(it) = self.items.get_mut(i) else {
                continue;
            };
            if it.scores.is_empty() && it.accepted.is_empty() {
                continue; // not scored yet: nothing to write
            }
            let tags = it.tags();
            if it.applied.as_ref() == Some(&tags) {
                continue;
            }
            before.push((i, it.applied.replace(tags.clone())));
            writes.push((it.path.clone(), tags));
        }
        if !before.is_empty() {
            self.undo.push(UndoStep::Apply(before));
        }
        writes
    }

    /// Reverts the last step; returns the sidecar writes that undo needs (None: delete).
    pub fn undo(&mut self) -> Option<Vec<(PathBuf, Option<Vec<String>>)>> {
        match self.undo.pop()? {
            UndoStep::Edit(before) => {
                for (i, it) in before {
                    if let Some(slot) = self.items.get_mut(i) {
                        *slot = it;
                    }
                }
                Some(Vec::new())
            }
            UndoStep::Apply(before) => {
                let mut writes = Vec::new();
                for (i, prev) in before {
                    if let Some(it) = self.items.get_mut(i) {
                        it.applied = prev.clone();
                        writes.push((it.path.clone(), prev));
                    }
                }
                Some(writes)
            }
        }
    }
}

// The pane's commands, called by the reducer (`super::update`).

pub(super) fn tags_command(state: &mut AppState, cmd: Cmd, effects: &mut Vec<Effect>) {
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
