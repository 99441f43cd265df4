//! Speaker turns from labelled windows, and their alignment to Whisper's words: each word
//! takes the speaker it overlaps most (the nearest turn when it overlaps none, whisperX's
//! `assign_word_speakers(fill_nearest=True)`), and a segment whose words change speaker is
//! split at the first word of each new speaker.
use crate::transcript::{Segment, Transcript, Word};

/// Who speaks from `start` to `end` (seconds); `speaker` indexes the speaker labels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Turn {
    pub start: f64,
    pub end: f64,
    pub speaker: usize,
}

/// The label of speaker `i`: its name from `--speaker-names`, else whisperX's `SPEAKER_00`.
pub fn speaker_label(i: usize, names: &[String]) -> String {
    names
        .get(i)
        .filter(|n| !n.trim().is_empty())
        .map_or_else(|| format!("SPEAKER_{i:02}"), |n| n.trim().to_string())
}

/// Turns from windows: `ranges` are the speech ranges (seconds), `windows` (range index,
/// window centre in seconds, label) in time order. Inside a range each window owns the time
/// up to the midpoints with its neighbours; a range without windows (too short to embed)
/// takes the speaker of the nearest turn. Adjacent turns of one speaker in one range merge.
pub fn turns_from_windows(ranges: &[(f64, f64)], windows: &[(usize, f64, usize)]) -> Vec<Turn> {
    let mut turns: Vec<Turn> = Vec::new();
    let mut orphans = Vec::new();
    for (r, &(start, end)) in ranges.iter().enumerate() {
        let inside: Vec<(f64, usize)> = windows
            .iter()
            .filter(|w| w.0 == r)
            .map(|w| (w.1, w.2))
            .collect();
        if inside.is_empty() {
            orphans.push((start, end));
            continue;
        }
        let mut from = start;
        for (i, &(centre, speaker)) in inside.iter().enumerate() {
            let to = inside
                .get(i + 1)
                .map_or(end, |next| ((centre + next.0) / 2.0).clamp(start, end));
            match turns.last_mut() {
                Some(last) if last.speaker == speaker && last.end == from => last.end = to,
                _ => turns.push(Turn {
                    start: from,
                    end: to,
                    speaker,
                }),
            }
            from = to;
        }
    }
    if turns.is_empty() {
        return Vec::new();
    }
    for (start, end) in orphans {
        if let Some(speaker) = nearest(&turns, start, end) {
            turns.push(Turn {
                start,
                end,
                speaker,
            });
        }
    }
    turns.sort_by(|a, b| a.start.total_cmp(&b.start));
    turns
}

/// The speaker who overlaps `start..end` most in total, or the one of the nearest turn.
pub fn speaker_at(turns: &[Turn], start: f64, end: f64) -> Option<usize> {
    let mut overlap: Vec<(usize, f64)> = Vec::new();
    for t in turns {
        let o = t.end.min(end) - t.start.max(start);
        if o > 0.0 {
            match overlap.iter_mut().find(|(s, _)| *s == t.speaker) {
                Some(e) => e.1 += o,
                None => overlap.push((t.speaker, o)),
            }
        }
    }
    overlap
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|&(s, _)| s)
        .or_else(|| nearest(turns, start, end))
}

fn nearest(turns: &[Turn], start: f64, end: f64) -> Option<usize> {
    turns
        .iter()
        .map(|t| {
            let gap = (t.start - end).max(start - t.end).max(0.0);
            (gap, t.speaker)
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, s)| s)
}

/// Gives every segment and word its speaker (`names` as in [`speaker_label`]), splitting a
/// segment where its words change speaker. A split piece has its words' text and times and
/// no tokens (Whisper's tokens do not divide at word boundaries); ids are renumbered.
pub fn assign_speakers(t: &mut Transcript, turns: &[Turn], names: &[String]) {
    if turns.is_empty() {
        return;
    }
    let label = |s: usize| speaker_label(s, names);
    let mut out: Vec<Segment> = Vec::with_capacity(t.segments.len());
    for mut seg in std::mem::take(&mut t.segments) {
        let words = match seg.words.take() {
            Some(words) if !words.is_empty() => words,
            none_or_empty => {
                seg.words = none_or_empty;
                seg.speaker = speaker_at(turns, seg.start, seg.end).map(label);
                out.push(seg);
                continue;
            }
        };
        let mut runs: Vec<(usize, Vec<Word>)> = Vec::new();
        for mut w in words {
            let s = speaker_at(turns, w.start, w.end).unwrap_or(0);
            w.speaker = Some(label(s));
            match runs.last_mut() {
                Some((last, ws)) if *last == s => ws.push(w),
                _ => runs.push((s, vec![w])),
            }
        }
        if runs.len() == 1 {
            let (s, ws) = runs.remove(0);
            seg.speaker = Some(label(s));
            seg.words = Some(ws);
            out.push(seg);
            continue;
        }
        for (s, ws) in runs {
            let text: String = ws.iter().map(|w| w.word.as_str()).collect();
            out.push(Segment {
                start: ws.first().map_or(seg.start, |w| w.start),
                end: ws.last().map_or(seg.end, |w| w.end),
                text,
                tokens: Vec::new(),
                speaker: Some(label(s)),
                words: Some(ws),
                ..seg.clone()
            });
        }
    }
    for (i, seg) in out.iter_mut().enumerate() {
        seg.id = i;
    }
    t.segments = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(w: &str, start: f64, end: f64) -> Word {
        Word {
            word: w.into(),
            start,
            end,
            probability: 0.9,
            speaker: None,
        }
    }

    fn segment(words: Vec<Word>) -> Segment {
        Segment {
            id: 0,
            seek: 0,
            start: words.first().map_or(0.0, |w| w.start),
            end: words.last().map_or(0.0, |w| w.end),
            text: words.iter().map(|w| w.word.as_str()).collect(),
            tokens: vec![1, 2, 3],
            temperature: 0.0,
            avg_logprob: -0.2,
            compression_ratio: 1.1,
            no_speech_prob: 0.01,
            words: Some(words),
            speaker: None,
        }
    }

    #[test]
    fn windows_become_turns_split_at_midpoints() {
        let ranges = [(0.0, 4.0), (5.0, 5.2), (6.0, 9.0)];
        let windows = [
            (0, 0.8, 0),
            (0, 1.6, 0),
            (0, 2.4, 1),
            (0, 3.2, 1),
            (2, 6.8, 1),
            (2, 7.6, 0),
        ];
        let turns = turns_from_windows(&ranges, &windows);
        let t = |start, end, speaker| Turn {
            start,
            end,
            speaker,
        };
        let want = vec![
            t(0.0, 2.0, 0),
            t(2.0, 4.0, 1),
            // 5.0..5.2 had no window: nearest turn is 2.0..4.0 (gap 1.0) vs 6.0.. (0.8)
            t(5.0, 5.2, 1),
            t(6.0, 7.2, 1),
            t(7.2, 9.0, 0),
        ];
        // Midpoints are f64 arithmetic ((6.8 + 7.6) / 2 is 7.199999999999999).
        assert_eq!(turns.len(), want.len(), "{turns:?}");
        for (got, want) in turns.iter().zip(&want) {
            assert_eq!(got.speaker, want.speaker, "{turns:?}");
            assert!((got.start - want.start).abs() < 1e-9, "{turns:?}");
            assert!((got.end - want.end).abs() < 1e-9, "{turns:?}");
        }
    }

    #[test]
    fn a_segment_is_split_at_the_word_where_the_speaker_changes() {
        let turns = [
            Turn {
                start: 0.0,
                end: 2.1,
                speaker: 0,
            },
            Turn {
                start: 2.1,
                end: 5.0,
                speaker: 1,
            },
        ];
        let mut t = Transcript {
            text: String::new(),
            segments: vec![
                segment(vec![
                    word(" Hello", 0.0, 0.5),
                    word(" there.", 0.5, 1.0),
                    word(" Hi", 2.0, 2.4), // 0.1 s with 0, 0.3 s with 1
                    word(" back.", 2.4, 3.0),
                ]),
                segment(vec![word(" Later", 6.0, 6.5)]), // no overlap: nearest turn
            ],
            language: "en".into(),
        };
        assign_speakers(&mut t, &turns, &["Alice".into()]);
        #[allow(clippy::type_complexity)]
        let got: Vec<(usize, &str, Option<&str>, f64, f64, usize)> = t
            .segments
            .iter()
            .map(|s| {
                (
                    s.id,
                    s.text.as_str(),
                    s.speaker.as_deref(),
                    s.start,
                    s.end,
                    s.tokens.len(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0, " Hello there.", Some("Alice"), 0.0, 1.0, 0),
                (1, " Hi back.", Some("SPEAKER_01"), 2.0, 3.0, 0),
                (2, " Later", Some("SPEAKER_01"), 6.0, 6.5, 3),
            ]
        );
        let words = t.segments[1].words.as_ref().unwrap();
        assert!(words
            .iter()
            .all(|w| w.speaker.as_deref() == Some("SPEAKER_01")));
    }

    #[test]
    fn no_turns_leave_the_transcript_alone() {
        let mut t = Transcript {
            segments: vec![segment(vec![word(" a", 0.0, 1.0)])],
            ..Transcript::default()
        };
        let before = t.clone();
        assign_speakers(&mut t, &[], &[]);
        assert_eq!(t, before);
    }
}
