//! Diarization of one file: 1.6 s windows (one resemblyzer partial each) every 0.5 s over the
//! VAD's speech ranges, their embeddings, clustering, and speaker turns.
use super::align::{turns_from_windows, Turn};
use super::cluster::{cluster, SpeakerCount, DISTANCE_THRESHOLD};
use super::model::{normalize_volume, SpeakerError, SpeakerModel, HOP, PARTIAL_FRAMES};

/// Frames between window starts (0.5 s).
pub const WINDOW_HOP_FRAMES: usize = 50;
/// A speech range shorter than this is not embedded; it takes its nearest neighbour's speaker.
pub const MIN_EMBED_SECONDS: f64 = 0.5;
const SAMPLE_RATE: f64 = 16_000.0;

#[derive(Debug, Clone, Default)]
pub struct DiarizeOptions {
    pub count: SpeakerCount,
    /// `--speaker-names`, in order of first appearance.
    pub names: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diarization {
    pub turns: Vec<Turn>,
    pub speakers: usize,
    pub windows: usize,
    /// Set when the speech was too short to embed (it is then all one speaker).
    pub too_short: Option<f64>,
}

/// Window start frames over a range of `frames` mel frames: every hop, plus one that ends at
/// the last frame so the tail is covered.
pub fn window_starts(frames: usize) -> Vec<usize> {
    if frames <= PARTIAL_FRAMES {
        return vec![0];
    }
    let last = frames - PARTIAL_FRAMES;
    let mut starts: Vec<usize> = (0..=last).step_by(WINDOW_HOP_FRAMES).collect();
    if starts.last() != Some(&last) {
        starts.push(last);
    }
    starts
}

/// Diarizes `audio` (16 kHz mono) given the VAD's speech ranges (samples, end exclusive).
pub fn diarize(
    model: &SpeakerModel,
    audio: &[f32],
    speech: &[(usize, usize)],
    options: &DiarizeOptions,
) -> Result<Diarization, SpeakerError> {
    let ranges: Vec<(f64, f64)> = speech
        .iter()
        .map(|&(a, b)| (a as f64 / SAMPLE_RATE, b as f64 / SAMPLE_RATE))
        .collect();
    let mut windows: Vec<(usize, f64, usize)> = Vec::new();
    let mut embeddings: Vec<Vec<f32>> = Vec::new();
    for (r, &(a, b)) in speech.iter().enumerate() {
        let (a, b) = (a.min(audio.len()), b.min(audio.len()));
        if ((b.saturating_sub(a)) as f64) < MIN_EMBED_SECONDS * SAMPLE_RATE {
            continue;
        }
        let mut wav = audio[a..b].to_vec();
        normalize_volume(&mut wav, model.target_dbfs);
        let real_frames = wav.len() / HOP;
        // a short range is zero-padded to one partial, as embed_utterance pads
        if wav.len() < PARTIAL_FRAMES * HOP {
            wav.resize(PARTIAL_FRAMES * HOP, 0.0);
        }
        let mel = model.mel(&wav)?;
        let starts = window_starts(real_frames.max(PARTIAL_FRAMES));
        let emb = model.embed_partials(&mel, &starts)?;
        let rows: Vec<Vec<f32>> =
            Vec::<Vec<f32>>::try_from(&emb).map_err(|e| SpeakerError::Torch(e.to_string()))?;
        let (ra, rb) = ranges[r];
        for (s, e) in starts.iter().zip(rows) {
            let centre = if real_frames < PARTIAL_FRAMES {
                (ra + rb) / 2.0
            } else {
                ra + ((s + PARTIAL_FRAMES / 2) * HOP) as f64 / SAMPLE_RATE
            };
            windows.push((r, centre, 0));
            embeddings.push(e);
        }
    }
    if windows.is_empty() {
        if speech.is_empty() {
            return Ok(Diarization::default());
        }
        let seconds = ranges.iter().map(|(a, b)| b - a).sum();
        let turns = ranges
            .iter()
            .map(|&(start, end)| Turn {
                start,
                end,
                speaker: 0,
            })
            .collect();
        return Ok(Diarization {
            turns,
            speakers: 1,
            windows: 0,
            too_short: Some(seconds),
        });
    }
    let labels = cluster(&embeddings, options.count, DISTANCE_THRESHOLD);
    for (w, l) in windows.iter_mut().zip(&labels) {
        w.2 = *l;
    }
    let turns = turns_from_windows(&ranges, &windows);
    Ok(Diarization {
        speakers: labels.iter().max().map_or(0, |m| m + 1),
        windows: windows.len(),
        turns,
        too_short: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_range_to_its_last_frame() {
        assert_eq!(window_starts(100), vec![0]);
        assert_eq!(window_starts(160), vec![0]);
        assert_eq!(window_starts(210), vec![0, 50]);
        assert_eq!(window_starts(230), vec![0, 50, 70]);
    }
}
