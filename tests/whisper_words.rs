//! Word-level timestamps (openai-whisper's timing.py) and `hallucination_silence_threshold`,
//! checked against openai-whisper run in the test (tools/export/refs/words_ref.py) on the same
//! converted weights and alignment heads.
//!
//! Tolerances: word text is exact. Word start/end may differ by one DTW time step, 0.02 s
//! (one audio token): the traced decoder's cross-attention differs from openai's by ~1e-5,
//! which can only flip a near-tie of the DTW cost, moving a boundary by one step. Word
//! probabilities within 1e-3: our float32 logits differ from openai's by ~5e-5.
//! openai is called with `temperature=0.0`, a single temperature, so ours runs with
//! `--temperature-increment-on-fallback 0`: a fallback to sampling would be random on both sides.
mod common;

use atelier::engine::whisper::timing::{dtw, median_filter, merge_punctuations, WordTiming};
use serde_json::{json, Value};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const TIME_TOLERANCE: f64 = 0.02 + 1e-9;
const PROBABILITY_TOLERANCE: f64 = 1e-3;

/// Runs words_ref.py in `mode` on `request`.
fn reference(mode: &str, request: &Value) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let request_path = dir.path().join("request.json");
    let out = dir.path().join("out.json");
    std::fs::write(&request_path, request.to_string()).unwrap();
    common::run_python(
        "tools/export/refs/words_ref.py",
        &[OsStr::new(mode), request_path.as_os_str(), out.as_os_str()],
    );
    serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap()
}

fn stem(path: &Path) -> String {
    path.file_stem().unwrap().to_string_lossy().into_owned()
}

/// openai's transcribe on each file (keyed by stem), with `options` added to `temperature=0`.
fn openai_transcribe(files: &[PathBuf], options: Value) -> Value {
    let mut opts = json!({"temperature": 0.0, "word_timestamps": true});
    opts.as_object_mut()
        .unwrap()
        .extend(options.as_object().unwrap().clone());
    let cases: Vec<Value> = files
        .iter()
        .map(|f| json!({"name": stem(f), "audio": f, "options": opts}))
        .collect();
    let manifest = common::test_models().join("whisper-tiny.en/manifest.toml");
    reference(
        "transcribe",
        &json!({
            "checkpoint": common::converted_checkpoint("whisper-tiny.en"),
            "manifest": manifest,
            "cases": cases,
        }),
    )
}

/// `atelier transcribe` on all files in one run; the JSON result per stem.
fn atelier_transcribe(files: &[PathBuf], extra: &[&str]) -> Vec<(String, Value)> {
    let tmp = tempfile::tempdir().unwrap();
    let out = common::atelier_with_models(tmp.path())
        .arg("transcribe")
        .args(files)
        .args(["--model", "whisper-tiny.en", "--no-vad", "--beam-size", "1"])
        .args(["--temperature-increment-on-fallback", "0"])
        .args([
            "--word-timestamps",
            "True",
            "--verbose",
            "False",
            "-f",
            "json",
            "-o",
        ])
        .arg(tmp.path())
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "atelier transcribe failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    files
        .iter()
        .map(|f| {
            let path = tmp.path().join(format!("{}.json", stem(f)));
            let text = std::fs::read_to_string(&path).unwrap();
            (stem(f), serde_json::from_str(&text).unwrap())
        })
        .collect()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Compares one transcript with openai's; returns the max (time, probability) differences.
fn compare(name: &str, ours: &Value, theirs: &Value) -> (f64, f64) {
    assert_eq!(ours["text"], theirs["text"], "{name}: text");
    let (a, b) = (
        ours["segments"].as_array().unwrap(),
        theirs["segments"].as_array().unwrap(),
    );
    assert_eq!(a.len(), b.len(), "{name}: segment count");
    let (mut dt, mut dp) = (0f64, 0f64);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let at = format!("{name}: segment {i}");
        assert_eq!(x["text"], y["text"], "{at}");
        // A word end one step off moves the next window's seek by two mel frames.
        let seek = (x["seek"].as_i64().unwrap() - y["seek"].as_i64().unwrap()).abs();
        assert!(seek <= 2, "{at}: seek {} vs {}", x["seek"], y["seek"]);
        for k in ["start", "end"] {
            let d = (f(&x[k]) - f(&y[k])).abs();
            assert!(d <= TIME_TOLERANCE, "{at}: {k} {} vs {}", x[k], y[k]);
            dt = dt.max(d);
        }
        let (wx, wy) = (
            x["words"]
                .as_array()
                .unwrap_or_else(|| panic!("{at}: no words")),
            y["words"].as_array().unwrap(),
        );
        assert_eq!(wx.len(), wy.len(), "{at}: word count");
        for (u, v) in wx.iter().zip(wy) {
            assert_eq!(u["word"], v["word"], "{at}");
            for k in ["start", "end"] {
                let d = (f(&u[k]) - f(&v[k])).abs();
                assert!(
                    d <= TIME_TOLERANCE,
                    "{at}: {} {k} {} vs {}",
                    u["word"],
                    u[k],
                    v[k]
                );
                dt = dt.max(d);
            }
            let d = (f(&u["probability"]) - f(&v["probability"])).abs();
            assert!(
                d <= PROBABILITY_TOLERANCE,
                "{at}: {} probability {} vs {}",
                u["word"],
                u["probability"],
                v["probability"]
            );
            dp = dp.max(d);
        }
    }
    (dt, dp)
}

fn compare_all(files: &[PathBuf], ours: &[(String, Value)], theirs: &Value) {
    let (mut dt, mut dp) = (0f64, 0f64);
    let mut words = 0;
    for (name, value) in ours {
        let (t, p) = compare(name, value, &theirs[name]);
        dt = dt.max(t);
        dp = dp.max(p);
        words += value["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["words"].as_array().map_or(0, Vec::len))
            .sum::<usize>();
    }
    println!(
        "{} files, {words} words: max |time diff| {dt:.3} s, max |probability diff| {dp:.2e}",
        files.len()
    );
}

#[test]
fn word_timestamps_match_openai_on_librivox() {
    let clips = common::librivox_clips();
    let ours = atelier_transcribe(&clips, &[]);
    let theirs = openai_transcribe(&clips, json!({}));
    for (name, value) in &ours {
        let words = value["segments"][0]["words"].as_array();
        assert!(words.is_some_and(|w| !w.is_empty()), "{name}: no words");
    }
    compare_all(&clips, &ours, &theirs);
}

fn load(path: &Path) -> Vec<f32> {
    atelier::media::audio::decode_to_16k_mono(path).unwrap()
}

fn silence(seconds: f64) -> Vec<f32> {
    vec![0.0; (seconds * 16_000.0) as usize]
}

#[test]
fn hallucination_silence_threshold_matches_openai() {
    let tmp = tempfile::tempdir().unwrap();
    let clips = common::librivox_clips();
    let (first, second) = (load(&clips[0]), load(&clips[1]));
    let write = |name: &str, parts: &[&[f32]]| {
        let path = tmp.path().join(name);
        common::write_wav(&path, &parts.concat());
        path
    };
    let decimate = |x: &[f32], k: usize, gain: f32| -> Vec<f32> {
        x.iter().step_by(k).map(|s| s * gain).collect()
    };
    let files = [
        // Speech with 10 s of silence before and after it.
        write("padded.wav", &[&silence(10.0), &first, &silence(10.0)]),
        // Speech at 3x speed: tiny.en hallucinates around it; openai drops every segment.
        write(
            "fast.wav",
            &[&silence(10.0), &decimate(&second, 3, 1.0), &silence(10.0)],
        ),
        // Quiet speech at 2x speed: the first segment looks hallucinated, so openai skips
        // the silence before it and decodes the window again.
        write(
            "quiet.wav",
            &[&silence(8.0), &decimate(&first, 2, 0.3), &silence(12.0)],
        ),
    ];
    let ours = atelier_transcribe(&files, &["--hallucination-silence-threshold", "2"]);
    let theirs = openai_transcribe(&files, json!({"hallucination_silence_threshold": 2}));
    // These inputs do reach the skipping code in openai (else the test proves little).
    assert!(!theirs["padded"]["segments"].as_array().unwrap().is_empty());
    assert!(theirs["fast"]["segments"].as_array().unwrap().is_empty());
    assert!(f(&theirs["quiet"]["segments"][0]["seek"]) > 0.0);
    compare_all(&files, &ours, &theirs);
}

/// Deterministic pseudo-random values in [0, 1).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct MedianCase {
    shape: Vec<usize>,
    values: Vec<f32>,
    width: usize,
}

/// Words with their tokens, as merge_punctuations sees them.
type Words = Vec<(String, Vec<u32>)>;

struct Cases {
    median: Vec<MedianCase>,
    dtw: Vec<(usize, usize, Vec<f64>)>,
    merge: Vec<(Words, String, String)>,
    out: Value,
}

fn nest(values: &[f32], shape: &[usize]) -> Value {
    match shape {
        [] | [_] => json!(values),
        [_, rest @ ..] => {
            let inner: usize = rest.iter().product();
            Value::Array(values.chunks(inner.max(1)).map(|c| nest(c, rest)).collect())
        }
    }
}

fn flatten(v: &Value, out: &mut Vec<f64>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| flatten(x, out)),
        x => out.push(f(x)),
    }
}

fn cases() -> &'static Cases {
    static CASES: OnceLock<Cases> = OnceLock::new();
    CASES.get_or_init(|| {
        let mut rng = Lcg(7);
        let mut median = Vec::new();
        let shapes: &[(&[usize], usize)] = &[
            (&[10], 7),
            (&[3], 7),
            (&[4], 7),
            (&[7], 7),
            (&[2, 5], 7),
            (&[3, 12], 7),
            (&[2, 3, 9], 7),
            (&[4, 20], 5),
            (&[2, 6], 3),
            (&[5], 1),
            (&[8, 40], 7),
        ];
        for (k, &(shape, width)) in shapes.iter().enumerate() {
            let n: usize = shape.iter().product();
            let values = (0..n)
                .map(|_| {
                    let x = rng.next();
                    // Every other case has few distinct values, for ties.
                    if k % 2 == 0 {
                        (x * 8.0).floor() as f32 - 3.0
                    } else {
                        (x * 4.0 - 2.0) as f32
                    }
                })
                .collect();
            median.push(MedianCase {
                shape: shape.to_vec(),
                values,
                width,
            });
        }
        let mut dtw = Vec::new();
        for (k, &(n, m)) in [
            (1, 1),
            (1, 5),
            (5, 1),
            (3, 3),
            (4, 9),
            (6, 20),
            (12, 40),
            (9, 9),
        ]
        .iter()
        .enumerate()
        {
            let x: Vec<f64> = (0..n * m)
                .map(|_| {
                    let r = rng.next();
                    // Integer costs give many equal-cost paths, testing the tie rules.
                    if k % 2 == 0 {
                        (r * 3.0).floor()
                    } else {
                        r * 2.0 - 1.0
                    }
                })
                .collect();
            dtw.push((n, m, x));
        }
        dtw.push((4, 6, vec![0.0; 24]));
        let prepend = "\"'“¿([{-".to_string();
        let append = "\"'.。,，!！?？:：”)]}、".to_string();
        let words = |ws: &[&str]| -> Words {
            ws.iter()
                .enumerate()
                .map(|(i, w)| (w.to_string(), vec![100 + i as u32, 200 + i as u32]))
                .collect()
        };
        let merge = vec![
            (
                words(&[" Hello", ",", " world", "."]),
                prepend.clone(),
                append.clone(),
            ),
            (
                words(&[" \"", "Hi", "\"", " there", " (", "x", ")", "."]),
                prepend.clone(),
                append.clone(),
            ),
            (words(&[" a", " (", " ("]), prepend.clone(), append.clone()),
            (
                words(&[" ", " b", " -", " c"]),
                prepend.clone(),
                append.clone(),
            ),
            (
                words(&[" a", ".", ".", "!", " b"]),
                prepend.clone(),
                append.clone(),
            ),
            (
                words(&["a ", ".", " b", "?"]),
                prepend.clone(),
                append.clone(),
            ),
            (
                words(&[" “", "Quote", "”", "。", "、"]),
                prepend.clone(),
                append.clone(),
            ),
            (words(&[" x", " y", " z"]), "xy".into(), "yz".into()),
            (words(&[" ¿", "Qué", "?"]), prepend.clone(), append.clone()),
            (words(&[" only"]), prepend.clone(), append.clone()),
            (words(&[]), prepend.clone(), append.clone()),
            (words(&[".", ",", " a"]), prepend, append),
        ];
        let request = json!({
            "median_filter": median
                .iter()
                .map(|c| json!({"x": nest(&c.values, &c.shape), "width": c.width}))
                .collect::<Vec<_>>(),
            "dtw": dtw
                .iter()
                .map(|(_, m, x)| x.chunks(*m).map(|r| r.to_vec()).collect::<Vec<_>>())
                .collect::<Vec<_>>(),
            "merge": merge
                .iter()
                .map(|(w, p, a)| json!({"words": w, "prepended": p, "appended": a}))
                .collect::<Vec<_>>(),
        });
        let out = reference("cases", &request);
        Cases {
            median,
            dtw,
            merge,
            out,
        }
    })
}

#[test]
fn median_filter_matches_openai() {
    let c = cases();
    for (case, want) in c
        .median
        .iter()
        .zip(c.out["median_filter"].as_array().unwrap())
    {
        let row = *case.shape.last().unwrap();
        let got = median_filter(&case.values, row, case.width);
        let mut expected = Vec::new();
        flatten(want, &mut expected);
        // serde_json may read a float 1 ulp off (no float_roundtrip); as f32 it is exact.
        let expected: Vec<f32> = expected.into_iter().map(|v| v as f32).collect();
        // A median picks one of its inputs: exact.
        assert_eq!(got, expected, "shape {:?} width {}", case.shape, case.width);
    }
}

#[test]
fn dtw_matches_openai() {
    let c = cases();
    for ((n, m, x), want) in c.dtw.iter().zip(c.out["dtw"].as_array().unwrap()) {
        let (text, time) = dtw(x, *n, *m);
        let want: (Vec<i64>, Vec<i64>) = serde_json::from_value(want.clone()).unwrap();
        assert_eq!((text, time), want, "{n}x{m}: {x:?}");
    }
}

#[test]
fn merge_punctuations_matches_openai() {
    let c = cases();
    for ((words, prepended, appended), want) in
        c.merge.iter().zip(c.out["merge"].as_array().unwrap())
    {
        let mut alignment: Vec<WordTiming> = words
            .iter()
            .map(|(w, t)| WordTiming {
                word: w.clone(),
                tokens: t.clone(),
                start: 0.0,
                end: 0.0,
                probability: 0.0,
            })
            .collect();
        merge_punctuations(&mut alignment, prepended, appended);
        let got: Vec<(String, Vec<u32>)> =
            alignment.into_iter().map(|t| (t.word, t.tokens)).collect();
        let want: Words = serde_json::from_value(want.clone()).unwrap();
        assert_eq!(got, want, "{words:?}");
    }
}
