//! Transcript writers, byte for byte the same as openai-whisper's `whisper/utils.py`
//! (`WriteTXT`, `WriteVTT`, `WriteSRT`, `WriteTSV`, `WriteJSON`), including its Python
//! details: `round()` is round-half-even, `len()` counts code points, `str.strip()` uses
//! Python's whitespace, and JSON is `json.dump` with `ensure_ascii` and Python float `repr`.
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use crate::transcript::{Segment, Transcript};

use super::atomic::output_path;
use super::registry::{write_output, OutputRegistry};

/// An output format. [`FORMATS`] is the one table of names and extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Txt,
    Vtt,
    Srt,
    Tsv,
    Json,
    Rttm,
}

/// Every format with its name (as on openai's `--output_format`) and file extension,
/// in openai's `all` order.
pub const FORMATS: &[(Format, &str, &str)] = &[
    (Format::Txt, "txt", "txt"),
    (Format::Vtt, "vtt", "vtt"),
    (Format::Srt, "srt", "srt"),
    (Format::Tsv, "tsv", "tsv"),
    (Format::Json, "json", "json"),
    (Format::Rttm, "rttm", "rttm"),
];

/// The name that selects openai's formats (every format but [`NOT_IN_ALL`]).
pub const ALL: &str = "all";
/// Formats `all` leaves out: RTTM only means something for a diarized transcript.
pub const NOT_IN_ALL: &[Format] = &[Format::Rttm];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown output format {0:?}: expected one of txt, vtt, srt, tsv, json, rttm or all")]
pub struct UnknownFormat(pub String);

impl Format {
    fn entry(self) -> &'static (Format, &'static str, &'static str) {
        // FORMATS lists every variant, so the search always finds one.
        FORMATS
            .iter()
            .find(|(f, _, _)| *f == self)
            .unwrap_or(&FORMATS[0])
    }

    pub fn name(self) -> &'static str {
        self.entry().1
    }

    pub fn extension(self) -> &'static str {
        self.entry().2
    }

    /// The formats `all` selects, in openai's order.
    pub fn all() -> Vec<Format> {
        FORMATS
            .iter()
            .map(|(f, _, _)| *f)
            .filter(|f| !NOT_IN_ALL.contains(f))
            .collect()
    }

    /// A format name, or `all` for every format.
    pub fn parse(name: &str) -> Result<Vec<Format>, UnknownFormat> {
        if name == ALL {
            return Ok(Self::all());
        }
        FORMATS
            .iter()
            .find(|(_, n, _)| *n == name)
            .map(|(f, _, _)| vec![*f])
            .ok_or_else(|| UnknownFormat(name.to_string()))
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// openai's word-level subtitle options (`--max_line_width` and friends). As in openai,
/// 0 means unset, and line width/count only apply together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterOptions {
    pub max_line_width: Option<usize>,
    pub max_line_count: Option<usize>,
    pub highlight_words: bool,
    pub max_words_per_line: Option<usize>,
}

/// The transcript in `format`, exactly as openai-whisper writes it (whisperX with speakers).
/// RTTM names the recording `audio`; [`write_named`] names it after the input file.
pub fn write(format: Format, transcript: &Transcript, options: &WriterOptions) -> String {
    write_named(format, transcript, options, "audio")
}

/// [`write`], with the recording's name for RTTM's file field.
pub fn write_named(
    format: Format,
    transcript: &Transcript,
    options: &WriterOptions,
    file_id: &str,
) -> String {
    match format {
        Format::Txt => write_txt(transcript),
        Format::Vtt => write_vtt(transcript, options),
        Format::Srt => write_srt(transcript, options),
        Format::Tsv => write_tsv(transcript),
        Format::Json => write_json(transcript),
        Format::Rttm => write_rttm(transcript, file_id),
    }
}

/// RTTM's file field for an input: its stem, whitespace as `_` (RTTM splits on it).
pub fn rttm_file_id(input_path: &Path) -> String {
    let stem = input_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "audio".into());
    rttm_field(&stem)
}

fn rttm_field(s: &str) -> String {
    let f: String = s
        .chars()
        .map(|c| if py_isspace(c) { '_' } else { c })
        .collect();
    if f.is_empty() {
        "<NA>".into()
    } else {
        f
    }
}

/// What the output record calls transcripts (see [`super::registry`]).
pub const KIND: &str = "transcript";

/// Writes each format to `{dir}/{input stem}.{ext}` atomically; returns the paths written.
/// A file at a name that is not our unchanged transcript of the same input (by `registry`;
/// without one, any file) is kept, and that output takes `{stem}.1.{ext}`.
pub fn write_files(
    registry: Option<&OutputRegistry>,
    dir: &Path,
    input_path: &Path,
    formats: &[Format],
    transcript: &Transcript,
    options: &WriterOptions,
) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::with_capacity(formats.len());
    for &format in formats {
        let path = output_path(dir, input_path, format.extension());
        let bytes = write_named(format, transcript, options, &rttm_file_id(input_path));
        written.push(write_output(
            registry,
            &path,
            input_path,
            KIND,
            bytes.as_bytes(),
        )?);
    }
    Ok(written)
}

/// openai's `format_timestamp`: `[HH:]MM:SS.mmm`, hours shown when asked or non-zero.
/// Negative or NaN times (openai asserts) are written as zero.
pub fn format_timestamp(seconds: f64, always_include_hours: bool, decimal_marker: &str) -> String {
    let mut ms = py_round(seconds * 1000.0).max(0);
    let hours = ms / 3_600_000;
    ms -= hours * 3_600_000;
    let minutes = ms / 60_000;
    ms -= minutes * 60_000;
    let secs = ms / 1_000;
    ms -= secs * 1_000;
    let hours_marker = if always_include_hours || hours > 0 {
        format!("{hours:02}:")
    } else {
        String::new()
    };
    format!("{hours_marker}{minutes:02}:{secs:02}{decimal_marker}{ms:03}")
}

/// Python's `round(x)` for a float: round half to even (NaN gives 0 instead of raising).
fn py_round(x: f64) -> i64 {
    if x.is_nan() {
        0
    } else {
        x.round_ties_even() as i64
    }
}

/// Python's `str.strip()`.
fn py_strip(s: &str) -> &str {
    s.trim_matches(py_isspace)
}

/// Python's `str.isspace` (and `re`'s `\s`): Unicode White_Space plus U+001C..U+001F.
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `len(str)`: code points.
fn py_len(s: &str) -> usize {
    s.chars().count()
}

/// whisperX's `[SPEAKER_00]: ` before a diarized segment's or cue's text.
fn speaker_prefix(speaker: Option<&str>) -> String {
    speaker.map_or_else(String::new, |s| format!("[{s}]: "))
}

/// A WebVTT voice tag: `SPEAKER_00` is shown as `Speaker 1`, a given name as it is.
fn vtt_voice(speaker: Option<&str>) -> String {
    let Some(s) = speaker else {
        return String::new();
    };
    let shown = s
        .strip_prefix("SPEAKER_")
        .and_then(|n| n.parse::<usize>().ok())
        .map_or_else(|| s.replace('>', ""), |n| format!("Speaker {}", n + 1));
    format!("<v {shown}>")
}

fn write_txt(t: &Transcript) -> String {
    let mut out = String::new();
    for segment in &t.segments {
        out.push_str(&speaker_prefix(segment.speaker.as_deref()));
        out.push_str(py_strip(&segment.text));
        out.push('\n');
    }
    out
}

/// NIST RTTM, one `SPEAKER` line per turn: a run of words (or segments without words) of
/// one speaker, joined over pauses under [`RTTM_JOIN_GAP`] seconds.
fn write_rttm(t: &Transcript, file_id: &str) -> String {
    let mut turns: Vec<(f64, f64, &str)> = Vec::new();
    let spans = t
        .segments
        .iter()
        .flat_map(|s| -> Vec<(f64, f64, Option<&str>)> {
            match s.words.as_deref() {
                Some(ws) if !ws.is_empty() => ws
                    .iter()
                    .map(|w| {
                        (
                            w.start,
                            w.end,
                            w.speaker.as_deref().or(s.speaker.as_deref()),
                        )
                    })
                    .collect(),
                _ => vec![(s.start, s.end, s.speaker.as_deref())],
            }
        });
    for (start, end, speaker) in spans {
        let Some(speaker) = speaker else { continue };
        match turns.last_mut() {
            Some(last) if last.2 == speaker && start - last.1 < RTTM_JOIN_GAP => {
                last.1 = last.1.max(end)
            }
            _ => turns.push((start, end, speaker)),
        }
    }
    let mut out = String::new();
    for (start, end, speaker) in turns {
        let _ = writeln!(
            out,
            "SPEAKER {file_id} 1 {start:.3} {:.3} <NA> <NA> {} <NA> <NA>",
            (end - start).max(0.0),
            rttm_field(speaker)
        );
    }
    out
}

/// Pauses shorter than this between one speaker's words stay inside one RTTM turn.
pub const RTTM_JOIN_GAP: f64 = 0.5;

fn write_vtt(t: &Transcript, options: &WriterOptions) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for (start, end, text, speaker) in iterate_result(t, options, false, ".") {
        let voice = vtt_voice(speaker.as_deref());
        let _ = write!(out, "{start} --> {end}\n{voice}{text}\n\n");
    }
    out
}

fn write_srt(t: &Transcript, options: &WriterOptions) -> String {
    let mut out = String::new();
    for (i, (start, end, text, speaker)) in iterate_result(t, options, true, ",")
        .into_iter()
        .enumerate()
    {
        let prefix = speaker_prefix(speaker.as_deref());
        let _ = write!(out, "{}\n{start} --> {end}\n{prefix}{text}\n\n", i + 1);
    }
    out
}

fn write_tsv(t: &Transcript) -> String {
    let mut out = String::from("start\tend\ttext\n");
    for s in &t.segments {
        let text = py_strip(&s.text).replace('\t', " ");
        let text = format!("{}{text}", speaker_prefix(s.speaker.as_deref()));
        let _ = writeln!(
            out,
            "{}\t{}\t{text}",
            py_round(1000.0 * s.start),
            py_round(1000.0 * s.end)
        );
    }
    out
}

/// One word of a subtitle as openai's `iterate_subtitles` builds it.
struct Timing {
    word: String,
    start: f64,
    end: f64,
    speaker: Option<String>,
}

fn words(segment: &Segment) -> &[crate::transcript::Word] {
    segment.words.as_deref().unwrap_or_default()
}

/// A subtitle cue: start, end, text and its speaker (diarized transcripts).
type Cue = (String, String, String, Option<String>);

/// openai's `SubtitlesWriter.iterate_result`: (start, end, text) cues, with the speaker of
/// the cue's segment or first word.
fn iterate_result(
    t: &Transcript,
    options: &WriterOptions,
    always_include_hours: bool,
    decimal_marker: &str,
) -> Vec<Cue> {
    let ts = |s: f64| format_timestamp(s, always_include_hours, decimal_marker);
    let mut cues = Vec::new();
    if t.segments.first().is_some_and(|s| s.words.is_some()) {
        for subtitle in iterate_subtitles(t, options) {
            let (Some(first), Some(last_word)) = (subtitle.first(), subtitle.last()) else {
                continue;
            };
            let subtitle_start = ts(first.start);
            let subtitle_end = ts(last_word.end);
            let subtitle_text: String = subtitle.iter().map(|w| w.word.as_str()).collect();
            let speaker = first.speaker.clone();
            if options.highlight_words {
                let mut last = subtitle_start;
                for (i, this_word) in subtitle.iter().enumerate() {
                    let start = ts(this_word.start);
                    let end = ts(this_word.end);
                    if last != start {
                        cues.push((last, start.clone(), subtitle_text.clone(), speaker.clone()));
                    }
                    let text: String = subtitle
                        .iter()
                        .enumerate()
                        .map(|(j, w)| {
                            if j == i {
                                underline(&w.word)
                            } else {
                                w.word.clone()
                            }
                        })
                        .collect();
                    cues.push((start, end.clone(), text, speaker.clone()));
                    last = end;
                }
            } else {
                cues.push((subtitle_start, subtitle_end, subtitle_text, speaker));
            }
        }
    } else {
        for s in &t.segments {
            let text = py_strip(&s.text).replace("-->", "->");
            cues.push((ts(s.start), ts(s.end), text, s.speaker.clone()));
        }
    }
    cues
}

/// openai's `iterate_subtitles`: groups words into cues and lines.
fn iterate_subtitles(t: &Transcript, options: &WriterOptions) -> Vec<Vec<Timing>> {
    let max_line_width = options.max_line_width.filter(|&w| w > 0);
    let max_line_count = options.max_line_count.filter(|&c| c > 0);
    let preserve_segments = max_line_count.is_none() || max_line_width.is_none();
    let max_line_width = max_line_width.unwrap_or(1000);
    let max_words_per_line = options
        .max_words_per_line
        .filter(|&n| n > 0)
        .unwrap_or(1000);

    let mut subtitles = Vec::new();
    let mut line_len = 0usize;
    let mut line_count = 1usize;
    let mut subtitle: Vec<Timing> = Vec::new();
    // openai's get_start(...) or 0.0
    let mut last = t
        .segments
        .iter()
        .flat_map(words)
        .map(|w| w.start)
        .next()
        .or_else(|| t.segments.first().map(|s| s.start))
        .unwrap_or(0.0);
    for segment in &t.segments {
        for chunk in words(segment).chunks(max_words_per_line) {
            for (i, original) in chunk.iter().enumerate() {
                let mut timing = Timing {
                    word: original.word.clone(),
                    start: original.start,
                    end: original.end,
                    speaker: original.speaker.clone().or_else(|| segment.speaker.clone()),
                };
                let long_pause = !preserve_segments && timing.start - last > 3.0;
                let has_room = line_len + py_len(&timing.word) <= max_line_width;
                // a new speaker starts a new cue, as a new segment does (diarized only)
                let speaker_change = subtitle
                    .last()
                    .is_some_and(|prev: &Timing| prev.speaker != timing.speaker);
                let seg_break =
                    (i == 0 && preserve_segments || speaker_change) && !subtitle.is_empty();
                if line_len > 0 && has_room && !long_pause && !seg_break {
                    // line continuation
                    line_len += py_len(&timing.word);
                } else {
                    // new line
                    timing.word = py_strip(&timing.word).to_string();
                    let cue_full =
                        max_line_count.is_some_and(|max| long_pause || line_count >= max);
                    if (!subtitle.is_empty() && cue_full) || seg_break {
                        // subtitle break
                        subtitles.push(std::mem::take(&mut subtitle));
                        line_count = 1;
                    } else if line_len > 0 {
                        // line break
                        line_count += 1;
                        timing.word = format!("\n{}", timing.word);
                    }
                    line_len = py_len(py_strip(&timing.word));
                }
                last = timing.start;
                subtitle.push(timing);
            }
        }
    }
    if !subtitle.is_empty() {
        subtitles.push(subtitle);
    }
    subtitles
}

/// `re.sub(r"^(\s*)(.*)$", r"\1<u>\2</u>", word)`: `.` stops at '\n', `$` also matches
/// before a final '\n', and a word the pattern cannot match stays as it is.
fn underline(word: &str) -> String {
    let body_start = word
        .char_indices()
        .find(|&(_, c)| !py_isspace(c))
        .map_or(word.len(), |(i, _)| i);
    let (lead, rest) = word.split_at(body_start);
    let (body, tail) = match rest.strip_suffix('\n') {
        Some(body) => (body, "\n"),
        None => (rest, ""),
    };
    if body.contains('\n') {
        return word.to_string();
    }
    format!("{lead}<u>{body}</u>{tail}")
}

/// `json.dump(result, file)`: `", "` and `": "` separators, `ensure_ascii`, Python floats.
/// Keys in openai's result order (which `Transcript`'s fields follow).
fn write_json(t: &Transcript) -> String {
    let mut out = String::new();
    out.push_str("{\"text\": ");
    json_str(&mut out, &t.text);
    out.push_str(", \"segments\": ");
    json_list(&mut out, &t.segments, |out, s| {
        let _ = write!(out, "{{\"id\": {}, \"seek\": {}, \"start\": ", s.id, s.seek);
        json_float(out, s.start);
        out.push_str(", \"end\": ");
        json_float(out, s.end);
        out.push_str(", \"text\": ");
        json_str(out, &s.text);
        out.push_str(", \"tokens\": ");
        json_list(out, &s.tokens, |out, tok| {
            let _ = write!(out, "{tok}");
        });
        for (key, value) in [
            ("temperature", s.temperature),
            ("avg_logprob", s.avg_logprob),
            ("compression_ratio", s.compression_ratio),
            ("no_speech_prob", s.no_speech_prob),
        ] {
            let _ = write!(out, ", \"{key}\": ");
            json_float(out, value);
        }
        if let Some(words) = &s.words {
            out.push_str(", \"words\": ");
            json_list(out, words, |out, w| {
                out.push_str("{\"word\": ");
                json_str(out, &w.word);
                for (key, value) in [
                    ("start", w.start),
                    ("end", w.end),
                    ("probability", w.probability),
                ] {
                    let _ = write!(out, ", \"{key}\": ");
                    json_float(out, value);
                }
                json_speaker(out, w.speaker.as_deref());
                out.push('}');
            });
        }
        json_speaker(out, s.speaker.as_deref());
        out.push('}');
    });
    out.push_str(", \"language\": ");
    json_str(&mut out, &t.language);
    out.push('}');
    out
}

/// whisperX's `speaker` key, added last to a segment or word that has one.
fn json_speaker(out: &mut String, speaker: Option<&str>) {
    if let Some(s) = speaker {
        out.push_str(", \"speaker\": ");
        json_str(out, s);
    }
}

/// A JSON list with Python's `", "` separator.
fn json_list<T>(out: &mut String, items: &[T], mut item: impl FnMut(&mut String, &T)) {
    out.push('[');
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        item(out, x);
    }
    out.push(']');
}

/// A JSON string as Python's `json` writes it with `ensure_ascii=True`.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// A float as Python's `float.__repr__` (and `json`) writes it: the shortest digits that
/// round-trip, fixed notation for 1e-4 <= |x| < 1e16 (always with a fraction, `1.0`),
/// otherwise `1e-05` / `1.5e+16`; `NaN`, `Infinity`, `-Infinity`.
pub fn py_float_repr(x: f64) -> String {
    let mut out = String::new();
    json_float(&mut out, x);
    out
}

fn json_float(out: &mut String, x: f64) {
    if x.is_nan() {
        out.push_str("NaN");
        return;
    }
    if x.is_infinite() {
        out.push_str(if x > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    let sci = shortest_sci(x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let n = digits.len() as i32;
    // Python's decpt: the decimal point sits after `decpt` digits.
    let decpt = exp + 1;
    if x.is_sign_negative() {
        out.push('-');
    }
    if decpt <= -4 || decpt > 16 {
        out.push_str(&digits[..1]);
        if n > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let sign = if exp < 0 { '-' } else { '+' };
        let _ = write!(out, "e{sign}{:02}", exp.unsigned_abs());
    } else if decpt <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-decpt) as usize));
        out.push_str(&digits);
    } else if decpt >= n {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (decpt - n) as usize));
        out.push_str(".0");
    } else {
        out.push_str(&digits[..decpt as usize]);
        out.push('.');
        out.push_str(&digits[decpt as usize..]);
    }
}

/// The shortest digits that round-trip, in `d.ddde±x` form, as Python's repr picks them:
/// when several such strings exist, the one nearest `x`, ties to even. Rust's `{:e}` gives
/// the shortest length but breaks exact ties upwards (75312553872812.125 -> ...13, Python
/// ...12); `{:.N e}` rounds the exact value half-to-even, so prefer it when it round-trips.
fn shortest_sci(x: f64) -> String {
    let shortest = format!("{x:e}");
    let mantissa = shortest.split('e').next().unwrap_or("");
    let digits = mantissa.chars().filter(char::is_ascii_digit).count();
    let nearest = format!("{:.*e}", digits.saturating_sub(1), x);
    if nearest.parse::<f64>() == Ok(x) {
        nearest
    } else {
        shortest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_like_python_repr() {
        let cases = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1.5e-7, "1.5e-07"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123.456, "123.456"),
            (-2.5e300, "-2.5e+300"),
            (5e-324, "5e-324"),
            // Exactly 75312553872812.125: a tie between two shortest strings.
            (f64::from_bits(0x42d1_1fc4_8153_6b08), "75312553872812.12"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
        ];
        for (x, want) in cases {
            assert_eq!(py_float_repr(x), want, "{x:e}");
        }
    }

    #[test]
    fn timestamps_round_half_even() {
        assert_eq!(format_timestamp(0.0005, false, "."), "00:00.000");
        assert_eq!(format_timestamp(0.0015, false, "."), "00:00.002");
        assert_eq!(format_timestamp(3725.5, true, ","), "01:02:05,500");
        assert_eq!(format_timestamp(-1.0, false, "."), "00:00.000");
    }

    #[test]
    fn underline_follows_python_regex() {
        assert_eq!(underline(" hi"), " <u>hi</u>");
        assert_eq!(underline("\nhi"), "\n<u>hi</u>");
        assert_eq!(underline("a\n"), "<u>a</u>\n");
        assert_eq!(underline("a\nb"), "a\nb");
        assert_eq!(underline(""), "<u></u>");
    }

    #[test]
    fn formats_parse() {
        assert_eq!(Format::parse("srt"), Ok(vec![Format::Srt]));
        assert_eq!(
            Format::parse("all").map(|v| v.len()),
            Ok(FORMATS.len() - NOT_IN_ALL.len())
        );
        assert_eq!(Format::parse("rttm"), Ok(vec![Format::Rttm]));
        assert!(Format::parse("docx").is_err());
        for &(f, name, ext) in FORMATS {
            assert_eq!((f.name(), f.extension()), (name, ext));
        }
    }
}
