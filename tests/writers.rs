//! The writers against openai-whisper's own writer classes: tools/export/refs/writers_ref.py
//! runs them in the venv on the same transcripts during the test, and every format must
//! match byte for byte. Also the atomic write and the output naming.
mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use atelier::output::atomic::{output_path, write_atomic};
use atelier::output::writers::{write, write_files, Format, WriterOptions, FORMATS};
use atelier::transcript::{Segment, Transcript, Word};
use serde_json::{json, Value};

const AUDIO_PATH: &str = "/recordings/2024.06 talk.final.wav";

/// File names whose stems must match Python's `os.path.splitext`.
const NAMES: &[&str] = &[
    "talk.wav",
    "a.b.c.mp3",
    ".hidden",
    "..wav",
    "a.",
    "noext",
    "..a.b",
    "ü nicode.flac",
    "dots...ogg",
];

/// A small deterministic generator, so the float cases are varied but reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Floats of every magnitude JSON repr switches on (1e-4, 1e16) and beyond.
    fn float(&mut self) -> f64 {
        let mantissa = (self.next() % 1_000_000_007) as f64 / 1_000_000_007.0;
        let exp = (self.next() % 40) as i32 - 20;
        let sign = if self.next() % 3 == 0 { -1.0 } else { 1.0 };
        sign * mantissa * 10f64.powi(exp)
    }
}

fn word(w: &str, start: f64, end: f64, p: f64) -> Word {
    Word {
        speaker: None,
        word: w.to_string(),
        start,
        end,
        probability: p,
    }
}

fn segment(id: usize, start: f64, end: f64, text: &str, words: Option<Vec<Word>>) -> Segment {
    Segment {
        speaker: None,
        id,
        seek: id * 3000,
        start,
        end,
        text: text.to_string(),
        tokens: vec![50364, 2425 + id as u32, 11, 50414],
        temperature: 0.0,
        avg_logprob: -0.25 - id as f64 * 0.013,
        compression_ratio: 1.2345,
        no_speech_prob: 0.001 * id as f64,
        words,
    }
}

fn transcript(segments: Vec<Segment>, language: &str) -> Transcript {
    Transcript {
        text: segments.iter().map(|s| s.text.as_str()).collect(),
        segments,
        language: language.to_string(),
    }
}

/// Segments without word timings: odd text, rounding edges, hours.
fn plain() -> Transcript {
    transcript(
        vec![
            segment(
                0,
                0.0,
                2.5,
                " Hello there --> arrow, \"quotes\" and \\ slash.",
                None,
            ),
            segment(
                1,
                1.0625,
                4.1875,
                "\ttabbed\ttext \u{1c}odd space\u{a0}",
                None,
            ),
            segment(
                2,
                4.0005,
                7.9995,
                " Ünïcödé: 日本語のテキスト 😀 emoji, \u{1}ctl \u{7f}del",
                None,
            ),
            segment(3, 59.9996, 61.0, "   ", None),
            segment(4, 3599.9995, 3725.4996, " Past an hour.", None),
            segment(
                5,
                36000.0,
                360000.123,
                " Ten and a hundred hours.\nNew line.",
                None,
            ),
        ],
        "en",
    )
}

/// Segments with word timings, long pauses, long words and a cue that starts after a gap.
fn with_words() -> Transcript {
    let seg0 = vec![
        word(" The", 0.0, 0.24, 0.9),
        word(" quick", 0.24, 0.5, 0.8),
        word(" brown", 0.5, 0.9, 0.77),
        word(" fox", 0.9, 1.2, 0.5),
        word(" jumps", 1.3, 1.6, 0.91),
        word(" over", 1.6, 1.8, 0.99),
        word(" the", 1.8, 1.9, 0.99),
        word(" extraordinarily", 1.9, 2.8, 0.6),
        word(" lazy", 2.8, 3.1, 0.7),
        word(" dog.", 3.1, 3.5, 0.95),
    ];
    let seg1 = vec![
        word(" After", 8.0, 8.3, 0.9),
        word(" a", 8.3, 8.4, 0.9),
        word(" long", 8.4, 8.7, 0.9),
        word(" pause,", 8.7, 9.2, 0.9),
        word(" café", 9.6, 10.0, 0.4),
        word(" naïve", 10.0, 10.5, 0.4),
        word(" 日本語", 10.5, 11.0, 0.3),
    ];
    let seg2 = vec![
        word(" Then", 3725.0, 3725.25, 0.8),
        word(" -->", 3725.25, 3725.5, 0.8),
        word(" hours", 3726.0, 3726.5, 0.8),
        word(" later.", 3726.5, 3727.0, 0.8),
    ];
    transcript(
        vec![
            segment(
                0,
                0.0,
                3.5,
                " The quick brown fox jumps over the extraordinarily lazy dog.",
                Some(seg0),
            ),
            segment(
                1,
                8.0,
                11.0,
                " After a long pause, café naïve 日本語",
                Some(seg1),
            ),
            segment(2, 3725.0, 3727.0, " Then --> hours later.", Some(seg2)),
        ],
        "en",
    )
}

/// Many floats of every magnitude, for the JSON writer's number formatting.
fn floats() -> Transcript {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut segments = Vec::new();
    for id in 0..40 {
        let start = (rng.next() % 100_000) as f64 / 7.0;
        let end = start + (rng.next() % 10_000) as f64 / 3.0;
        let mut s = segment(id, start, end, " x", None);
        s.temperature = [0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0][id % 6];
        s.avg_logprob = rng.float();
        s.compression_ratio = rng.float();
        s.no_speech_prob = rng.float();
        let words = (0..3)
            .map(|_| {
                let t = (rng.next() % 10_000_000) as f64 / 997.0;
                word(" w", t, t + (rng.next() % 1000) as f64 / 1e3, rng.float())
            })
            .collect();
        s.words = Some(words);
        segments.push(s);
    }
    // Exact ties between two shortest strings (x.125 around 1e13..1e15): Python rounds
    // those half-to-even.
    for s in segments.iter_mut().skip(10) {
        let big = (rng.next() % (1 << 50)) as f64 + [0.125, 0.375, 0.625, 0.875][s.id % 4];
        s.compression_ratio = big;
    }
    let special = [
        1e-5,
        1e-4,
        1e15,
        1e16,
        1e17,
        5e-324,
        1.7976931348623157e308,
        0.1 + 0.2,
        -0.0,
        123456789.0,
    ];
    for (i, x) in special.into_iter().enumerate() {
        segments[i].avg_logprob = x;
    }
    transcript(segments, "ja")
}

fn cases() -> Vec<(&'static str, Transcript, WriterOptions)> {
    let opts = |w: Option<usize>, c: Option<usize>, h: bool, n: Option<usize>| WriterOptions {
        max_line_width: w,
        max_line_count: c,
        highlight_words: h,
        max_words_per_line: n,
    };
    let mut first_empty = with_words();
    first_empty.segments[0].words = Some(Vec::new());
    vec![
        ("plain", plain(), opts(None, None, false, None)),
        // Without word timings, the subtitle options change nothing.
        (
            "plain_options",
            plain(),
            opts(Some(20), Some(2), true, Some(3)),
        ),
        (
            "empty",
            transcript(Vec::new(), "en"),
            opts(None, None, false, None),
        ),
        ("words", with_words(), opts(None, None, false, None)),
        (
            "width_count",
            with_words(),
            opts(Some(20), Some(2), false, None),
        ),
        (
            "width_only",
            with_words(),
            opts(Some(20), None, false, None),
        ),
        ("highlight", with_words(), opts(None, None, true, None)),
        ("per_line", with_words(), opts(None, None, false, Some(3))),
        (
            "all_options",
            with_words(),
            opts(Some(20), Some(2), true, Some(3)),
        ),
        (
            "zero_means_unset",
            with_words(),
            opts(Some(0), Some(0), false, Some(0)),
        ),
        (
            "first_words_empty",
            first_empty,
            opts(Some(20), Some(2), false, None),
        ),
        ("floats", floats(), opts(None, None, false, None)),
    ]
}

fn options_json(o: &WriterOptions) -> Value {
    json!({
        "max_line_width": o.max_line_width,
        "max_line_count": o.max_line_count,
        "highlight_words": o.highlight_words,
        "max_words_per_line": o.max_words_per_line,
    })
}

/// Runs openai's writers on every case once; returns the folder they wrote.
fn reference() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        // Each transcript goes in its own file: serde keeps the struct's field order there,
        // while a serde_json::Value would sort the keys.
        let cases: Vec<Value> = cases()
            .iter()
            .map(|(name, t, o)| {
                let path = dir.path().join(format!("{name}.json"));
                std::fs::write(&path, serde_json::to_string(t).unwrap()).unwrap();
                json!({"name": name, "result_path": path, "options": options_json(o), "audio_path": AUDIO_PATH})
            })
            .collect();
        let request = dir.path().join("request.json");
        std::fs::write(&request, json!({"cases": cases, "names": NAMES}).to_string()).unwrap();
        let out = dir.path().join("out");
        common::run_python(
            "tools/export/refs/writers_ref.py",
            &[request.as_os_str(), out.as_os_str()],
        );
        dir
    })
    .path()
}

/// Where two outputs first differ, with a little context.
fn first_difference(got: &str, want: &str) -> String {
    let at = got
        .char_indices()
        .zip(want.chars())
        .find(|((_, g), w)| g != w)
        .map_or(got.len().min(want.len()), |((i, _), _)| i);
    let context = |s: &str| -> String {
        let mut from = at.saturating_sub(60).min(s.len());
        while !s.is_char_boundary(from) {
            from -= 1;
        }
        s[from..].chars().take(120).collect()
    };
    format!(
        "byte {at}:\n  ours:   {:?}\n  openai: {:?}",
        context(got),
        context(want)
    )
}

#[test]
fn every_format_matches_openai_byte_for_byte() {
    let out = reference().join("out");
    let mut failures = Vec::new();
    for (name, t, options) in cases() {
        // openai's formats (RTTM is not one: speaker_layouts_match_the_references)
        for &(format, _, ext) in FORMATS.iter().filter(|f| Format::all().contains(&f.0)) {
            let want_path = output_path(&out.join(name), Path::new(AUDIO_PATH), ext);
            let want = std::fs::read(&want_path)
                .unwrap_or_else(|e| panic!("{}: {e}", want_path.display()));
            let got = write(format, &t, &options);
            if got.as_bytes() != want.as_slice() {
                let want = String::from_utf8_lossy(&want);
                failures.push(format!("{name}.{ext}: {}", first_difference(&got, &want)));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn write_files_names_outputs_like_openai() {
    let out = reference().join("out");
    let (name, t, options) = cases().swap_remove(3);
    let dir = tempfile::tempdir().unwrap();
    let written = write_files(
        None,
        dir.path(),
        Path::new(AUDIO_PATH),
        &Format::all(),
        &t,
        &options,
    )
    .unwrap();
    assert_eq!(written.len(), Format::all().len());
    let names = |d: &Path| -> BTreeSet<String> {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(names(dir.path()), names(&out.join(name)));
    for path in written {
        let theirs = out.join(name).join(path.file_name().unwrap());
        let ours = std::fs::read_to_string(&path).unwrap();
        let want = std::fs::read_to_string(&theirs).unwrap();
        assert!(
            ours == want,
            "{}: {}",
            path.display(),
            first_difference(&ours, &want)
        );
    }

    let stems: Vec<String> =
        serde_json::from_slice(&std::fs::read(out.join("splitext.json")).unwrap()).unwrap();
    for (input, stem) in NAMES.iter().zip(stems) {
        let got = output_path(Path::new("/o"), Path::new(input), "txt");
        assert_eq!(got, PathBuf::from(format!("/o/{stem}.txt")), "{input}");
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn atomic_write_replaces_whole_file_and_leaves_no_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.srt");
    write_atomic(&path, b"first version, longer than the second").unwrap();
    write_atomic(&path, b"second").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"second");
    assert_eq!(entries(dir.path()), vec!["out.srt"]);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode(&path),
            mode(&plain),
            "same mode as a plainly created file"
        );
    }
}

#[test]
fn failed_atomic_writes_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    // The target is a folder: the final rename fails after the data was written.
    let target = dir.path().join("taken");
    std::fs::create_dir(&target).unwrap();
    let err = write_atomic(&target, b"data").unwrap_err();
    assert!(
        err.to_string().contains(&target.display().to_string()),
        "{err}"
    );
    assert_eq!(entries(dir.path()), vec!["taken"]);
    assert!(entries(&target).is_empty());

    // A folder that does not exist.
    let missing = dir.path().join("nope/out.txt");
    let err = write_atomic(&missing, b"data").unwrap_err();
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let ro = dir.path().join("read-only");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        // root ignores folder permissions; only check where they apply.
        let probe = ro.join("probe");
        if std::fs::write(&probe, b"").is_err() {
            let err = write_atomic(&ro.join("out.txt"), b"data").unwrap_err();
            assert!(err.to_string().contains("out.txt"), "{err}");
            assert!(entries(&ro).is_empty());
        } else {
            let _ = std::fs::remove_file(&probe);
        }
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// The transcript of tests/speaker_refs/make_refs.py, diarized.
fn diarized() -> Transcript {
    let seg = |id: usize,
               seek: usize,
               text: &str,
               tokens: Vec<u32>,
               speaker: &str,
               words: &[(&str, f64, f64, f64)]| {
        let words: Vec<Word> = words
            .iter()
            .map(|&(w, start, end, p)| Word {
                speaker: Some(speaker.to_string()),
                ..word(w, start, end, p)
            })
            .collect();
        Segment {
            speaker: Some(speaker.to_string()),
            id,
            seek,
            start: words[0].start,
            end: words[words.len() - 1].end,
            text: text.to_string(),
            tokens,
            temperature: 0.0,
            avg_logprob: -0.25,
            compression_ratio: 1.1,
            no_speech_prob: 0.01,
            words: Some(words),
        }
    };
    let segments = vec![
        seg(
            0,
            0,
            " Hello there.",
            vec![50364, 2425, 456, 13],
            "SPEAKER_00",
            &[(" Hello", 0.0, 0.6, 0.91), (" there.", 0.6, 1.2, 0.88)],
        ),
        seg(
            1,
            0,
            " Hi, Bob.",
            vec![],
            "SPEAKER_01",
            &[(" Hi,", 3.0, 3.5, 0.75), (" Bob.", 3.62, 4.46, 0.5)],
        ),
        seg(
            2,
            500,
            " Bye.",
            vec![50364, 7014, 13],
            "SPEAKER_00",
            &[(" Bye.", 5.2, 5.9, 0.99)],
        ),
    ];
    transcript(segments, "en")
}

#[test]
fn speaker_layouts_match_the_references() {
    let refs = common::root().join("tests/speaker_refs");
    let t = diarized();
    let opts = WriterOptions::default();
    let json = write(Format::Json, &t, &opts);
    let want = std::fs::read_to_string(refs.join("whisperx.json")).unwrap();
    assert!(
        json == want,
        "whisperx.json: {}",
        first_difference(&json, &want)
    );
    let dir = tempfile::tempdir().unwrap();
    let written = write_files(
        None,
        dir.path(),
        Path::new("/rec/talk.wav"),
        &[Format::Rttm],
        &t,
        &opts,
    )
    .unwrap();
    let rttm = std::fs::read_to_string(&written[0]).unwrap();
    let want = std::fs::read_to_string(refs.join("talk.rttm")).unwrap();
    assert!(
        rttm == want,
        "talk.rttm: {}",
        first_difference(&rttm, &want)
    );
    // a diarized JSON reads back as the same transcript (the queue and the TUI reload it)
    let back: Transcript = serde_json::from_str(&json).unwrap();
    assert_eq!(back, t);
}

#[test]
fn subtitles_and_tables_carry_the_speaker() {
    let t = diarized();
    let opts = WriterOptions::default();
    assert_eq!(
        write(Format::Txt, &t, &opts),
        "[SPEAKER_00]: Hello there.\n[SPEAKER_01]: Hi, Bob.\n[SPEAKER_00]: Bye.\n"
    );
    assert_eq!(
        write(Format::Tsv, &t, &opts),
        "start\tend\ttext\n0\t1200\t[SPEAKER_00]: Hello there.\n3000\t4460\t[SPEAKER_01]: Hi, Bob.\n5200\t5900\t[SPEAKER_00]: Bye.\n"
    );
    let srt = write(Format::Srt, &t, &opts);
    assert!(srt.starts_with("1\n00:00:00,000 --> 00:00:01,200\n[SPEAKER_00]: Hello there.\n\n2\n00:00:03,000 --> 00:00:04,460\n[SPEAKER_01]: Hi, Bob.\n\n"), "{srt}");
    let vtt = write(Format::Vtt, &t, &opts);
    assert!(vtt.starts_with("WEBVTT\n\n00:00.000 --> 00:01.200\n<v Speaker 1>Hello there.\n\n00:03.000 --> 00:04.460\n<v Speaker 2>Hi, Bob.\n\n"), "{vtt}");
    // line-width cues never hold two speakers
    let wide = WriterOptions {
        max_line_width: Some(80),
        max_line_count: Some(2),
        ..WriterOptions::default()
    };
    let srt = write(Format::Srt, &t, &wide);
    assert_eq!(srt.matches("-->").count(), 3, "{srt}");
    // names from --speaker-names are kept as given
    let mut named = t.clone();
    for s in &mut named.segments {
        if s.speaker.as_deref() == Some("SPEAKER_01") {
            s.speaker = Some("Bob Smith".into());
            for w in s.words.iter_mut().flatten() {
                w.speaker = Some("Bob Smith".into());
            }
        }
    }
    assert!(write(Format::Vtt, &named, &opts).contains("<v Bob Smith>Hi, Bob."));
    assert!(write(Format::Rttm, &named, &opts).contains(" Bob_Smith "));
}
