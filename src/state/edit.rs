//! A small text editor for the palette, search prompts, segment text and prompts.

/// A key while a text field has the focus (the app maps terminal keys to these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKey {
    Char(char),
    Backspace,
    Delete,
    Left,
    Right,
    Up,
    Down,
    Home,
    End,
    /// Enter: commit (single line) or commit (multi-line too; alt-enter inserts a newline).
    Enter,
    Newline,
    Esc,
    Tab,
}

/// What a key did to the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditOutcome {
    Changed,
    Moved,
    Commit,
    Abort,
    Ignored,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextEdit {
    pub text: String,
    /// Cursor position in chars.
    pub cursor: usize,
    pub multiline: bool,
}

impl TextEdit {
    pub fn new(text: &str, multiline: bool) -> Self {
        TextEdit {
            text: text.to_string(),
            cursor: text.chars().count(),
            multiline,
        }
    }

    fn byte(&self, char_idx: usize) -> usize {
        self.text
            .char_indices()
            .nth(char_idx)
            .map_or(self.text.len(), |(b, _)| b)
    }

    fn len(&self) -> usize {
        self.text.chars().count()
    }

    /// (line, column) of the cursor, in chars.
    pub fn cursor_line_col(&self) -> (usize, usize) {
        let before: String = self.text.chars().take(self.cursor).collect();
        let line = before.matches('\n').count();
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count());
        (line, col)
    }

    fn line_start(&self, line: usize) -> usize {
        let mut idx = 0;
        for (i, l) in self.text.split('\n').enumerate() {
            if i == line {
                return idx;
            }
            idx += l.chars().count() + 1;
        }
        self.len()
    }

    fn move_vertical(&mut self, delta: isize) -> EditOutcome {
        let (line, col) = self.cursor_line_col();
        let lines: Vec<&str> = self.text.split('\n').collect();
        let target = line as isize + delta;
        if target < 0 || target as usize >= lines.len() {
            return EditOutcome::Ignored;
        }
        let target = target as usize;
        let width = lines[target].chars().count();
        self.cursor = self.line_start(target) + col.min(width);
        EditOutcome::Moved
    }

    pub fn key(&mut self, key: TextKey) -> EditOutcome {
        match key {
            TextKey::Char(c) => {
                let b = self.byte(self.cursor);
                self.text.insert(b, c);
                self.cursor += 1;
                EditOutcome::Changed
            }
            TextKey::Newline if self.multiline => self.key(TextKey::Char('\n')),
            TextKey::Newline | TextKey::Tab => EditOutcome::Ignored,
            TextKey::Backspace => {
                if self.cursor == 0 {
                    return EditOutcome::Ignored;
                }
                self.cursor -= 1;
                let b = self.byte(self.cursor);
                self.text.remove(b);
                EditOutcome::Changed
            }
            TextKey::Delete => {
                if self.cursor >= self.len() {
                    return EditOutcome::Ignored;
                }
                let b = self.byte(self.cursor);
                self.text.remove(b);
                EditOutcome::Changed
            }
            TextKey::Left => {
                self.cursor = self.cursor.saturating_sub(1);
                EditOutcome::Moved
            }
            TextKey::Right => {
                self.cursor = (self.cursor + 1).min(self.len());
                EditOutcome::Moved
            }
            TextKey::Home => {
                let (line, _) = self.cursor_line_col();
                self.cursor = self.line_start(line);
                EditOutcome::Moved
            }
            TextKey::End => {
                let (line, _) = self.cursor_line_col();
                let width = self
                    .text
                    .split('\n')
                    .nth(line)
                    .map_or(0, |l| l.chars().count());
                self.cursor = self.line_start(line) + width;
                EditOutcome::Moved
            }
            TextKey::Up => self.move_vertical(-1),
            TextKey::Down => self.move_vertical(1),
            TextKey::Enter => EditOutcome::Commit,
            TextKey::Esc => EditOutcome::Abort,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(e: &mut TextEdit, s: &str) {
        for c in s.chars() {
            e.key(TextKey::Char(c));
        }
    }

    #[test]
    fn inserts_and_deletes_at_the_cursor_with_multibyte_text() {
        let mut e = TextEdit::new("héllo", false);
        e.key(TextKey::Left);
        e.key(TextKey::Left);
        typed(&mut e, "ß");
        assert_eq!(e.text, "hélßlo");
        e.key(TextKey::Backspace);
        e.key(TextKey::Backspace);
        assert_eq!(e.text, "hélo");
        e.key(TextKey::Home);
        e.key(TextKey::Delete);
        assert_eq!(e.text, "élo");
        assert_eq!(e.key(TextKey::Enter), EditOutcome::Commit);
    }

    #[test]
    fn newline_only_in_multiline_fields_and_vertical_moves_keep_the_column() {
        let mut single = TextEdit::new("a", false);
        assert_eq!(single.key(TextKey::Newline), EditOutcome::Ignored);
        let mut e = TextEdit::new("abcd", true);
        e.key(TextKey::Newline);
        typed(&mut e, "xy");
        assert_eq!(e.text, "abcd\nxy");
        assert_eq!(e.cursor_line_col(), (1, 2));
        e.key(TextKey::Up);
        assert_eq!(e.cursor_line_col(), (0, 2));
        e.key(TextKey::End);
        e.key(TextKey::Down);
        assert_eq!(e.cursor_line_col(), (1, 2));
    }
}
