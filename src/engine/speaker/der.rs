//! Diarization error rate as md-eval/pyannote.metrics define it, on 10 ms frames: (missed
//! speech + false alarm + speaker confusion) / reference speech, with the hypothesis
//! speakers mapped one-to-one onto the reference speakers so as to maximise their overlap.
//! Overlapped speech is not modelled (one speaker per frame on each side), and the optional
//! collar leaves that many seconds either side of each reference boundary unscored.
use super::align::Turn;

const FRAME: f64 = 0.01;

#[derive(Debug, Clone, PartialEq)]
pub struct DerReport {
    pub der: f64,
    pub missed: f64,
    pub false_alarm: f64,
    pub confusion: f64,
    /// Scored reference speech, seconds.
    pub reference: f64,
    /// `mapping[h]`: the reference speaker hypothesis speaker `h` stands for, if any.
    pub mapping: Vec<Option<usize>>,
}

/// One speaker (or none) per frame.
fn frames(turns: &[Turn], n: usize) -> Vec<Option<usize>> {
    let mut out = vec![None; n];
    for t in turns {
        let a = ((t.start / FRAME).round().max(0.0) as usize).min(n);
        let b = ((t.end / FRAME).round().max(0.0) as usize).min(n);
        for f in out.iter_mut().take(b).skip(a) {
            *f = Some(t.speaker);
        }
    }
    out
}

/// The one-to-one map hypothesis → reference with the largest total overlap (exhaustive
/// search: diarization has a handful of speakers).
pub fn best_mapping(overlap: &[Vec<f64>]) -> Vec<Option<usize>> {
    let hyp = overlap.len();
    let refs = overlap.first().map_or(0, Vec::len);
    let mut best = (f64::NEG_INFINITY, vec![None; hyp]);
    let mut current = vec![None; hyp];
    let mut used = vec![false; refs];
    fn search(
        h: usize,
        score: f64,
        overlap: &[Vec<f64>],
        current: &mut Vec<Option<usize>>,
        used: &mut Vec<bool>,
        best: &mut (f64, Vec<Option<usize>>),
    ) {
        if h == overlap.len() {
            if score > best.0 {
                *best = (score, current.clone());
            }
            return;
        }
        current[h] = None;
        search(h + 1, score, overlap, current, used, best);
        for r in 0..used.len() {
            if !used[r] {
                used[r] = true;
                current[h] = Some(r);
                search(h + 1, score + overlap[h][r], overlap, current, used, best);
                used[r] = false;
            }
        }
        current[h] = None;
    }
    search(0, 0.0, overlap, &mut current, &mut used, &mut best);
    best.1
}

/// DER of `hypothesis` against `reference` over `0..duration` seconds.
pub fn der(reference: &[Turn], hypothesis: &[Turn], duration: f64, collar: f64) -> DerReport {
    let n = (duration / FRAME).ceil().max(0.0) as usize;
    let r = frames(reference, n);
    let h = frames(hypothesis, n);
    let mut scored = vec![true; n];
    if collar > 0.0 {
        let c = (collar / FRAME).round() as usize;
        for t in reference {
            for edge in [t.start, t.end] {
                let e = (edge / FRAME).round().max(0.0) as usize;
                for s in scored
                    .iter_mut()
                    .take((e + c).min(n))
                    .skip(e.saturating_sub(c))
                {
                    *s = false;
                }
            }
        }
    }
    let n_ref = reference.iter().map(|t| t.speaker + 1).max().unwrap_or(0);
    let n_hyp = hypothesis.iter().map(|t| t.speaker + 1).max().unwrap_or(0);
    let mut overlap = vec![vec![0.0; n_ref]; n_hyp];
    for i in 0..n {
        if let (true, Some(a), Some(b)) = (scored[i], r[i], h[i]) {
            overlap[b][a] += FRAME;
        }
    }
    let mapping = best_mapping(&overlap);
    let (mut missed, mut false_alarm, mut confusion, mut speech) = (0.0, 0.0, 0.0, 0.0);
    for i in (0..n).filter(|&i| scored[i]) {
        match (r[i], h[i]) {
            (Some(a), Some(b)) => {
                speech += FRAME;
                if mapping[b] != Some(a) {
                    confusion += FRAME;
                }
            }
            (Some(_), None) => {
                speech += FRAME;
                missed += FRAME;
            }
            (None, Some(_)) => false_alarm += FRAME,
            (None, None) => {}
        }
    }
    let der = if speech > 0.0 {
        (missed + false_alarm + confusion) / speech
    } else if false_alarm > 0.0 {
        1.0
    } else {
        0.0
    };
    DerReport {
        der,
        missed,
        false_alarm,
        confusion,
        reference: speech,
        mapping,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(start: f64, end: f64, speaker: usize) -> Turn {
        Turn {
            start,
            end,
            speaker,
        }
    }

    #[test]
    fn relabelled_perfect_hypothesis_scores_zero() {
        let r = [t(0.0, 2.0, 0), t(2.0, 5.0, 1), t(6.0, 8.0, 0)];
        let h = [t(0.0, 2.0, 1), t(2.0, 5.0, 0), t(6.0, 8.0, 1)];
        let rep = der(&r, &h, 8.0, 0.0);
        assert!(rep.der.abs() < 1e-9, "{rep:?}");
        assert_eq!(rep.mapping, vec![Some(1), Some(0)]);
    }

    #[test]
    fn counts_missed_false_alarm_and_confusion() {
        // reference 0..4 A, 4..8 B (8 s of speech)
        let r = [t(0.0, 4.0, 0), t(4.0, 8.0, 1)];
        // 0..1 missed, 1..5 speaker X (A, but 4..5 is B: 1 s confusion), 5..8 Y, 8..9 FA
        let h = [t(1.0, 5.0, 0), t(5.0, 9.0, 1)];
        let rep = der(&r, &h, 10.0, 0.0);
        assert!((rep.missed - 1.0).abs() < 1e-6, "{rep:?}");
        assert!((rep.confusion - 1.0).abs() < 1e-6, "{rep:?}");
        assert!((rep.false_alarm - 1.0).abs() < 1e-6, "{rep:?}");
        assert!((rep.der - 3.0 / 8.0).abs() < 1e-6, "{rep:?}");
        // a 0.5 s collar takes 0.5 s off each boundary side: 1 s of missed speech at 0..1
        // keeps 0.5..1; 4..5 confusion keeps 4.5..5; 8..9 keeps 8.5..9
        let collared = der(&r, &h, 10.0, 0.5);
        assert!((collared.missed - 0.5).abs() < 1e-6, "{collared:?}");
        assert!((collared.confusion - 0.5).abs() < 1e-6, "{collared:?}");
    }

    #[test]
    fn more_hypothesis_speakers_than_reference() {
        let r = [t(0.0, 6.0, 0)];
        let h = [t(0.0, 4.0, 0), t(4.0, 6.0, 1)];
        let rep = der(&r, &h, 6.0, 0.0);
        assert_eq!(rep.mapping, vec![Some(0), None]);
        assert!((rep.der - 2.0 / 6.0).abs() < 1e-6);
    }
}
