//! Speaker diarization: the exported encoder against resemblyzer's own embeddings, and
//! conversations built here from known voices (one LibriVox reader, espeak-ng voices) with
//! known turn boundaries, scored by DER (engine turns and the `-f rttm` output) and by
//! speaker-attributed word accuracy (the `-f json` output). Run with `--nocapture` to see the
//! figures; docs/whisper.md ("Speakers") records them, and the bounds here keep a margin.
mod common;

use atelier::engine::speaker::der::{best_mapping, der};
use atelier::engine::speaker::{diarize, DiarizeOptions, SpeakerCount, SpeakerModel, Turn};
use atelier::engine::store::InstalledModel;
use atelier::engine::whisper::vad::{speech_timestamps, Vad};
use atelier::output::writers::{write, Format, WriterOptions};
use atelier::transcript::Transcript;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const RATE: f64 = 16_000.0;
/// Silence between turns, seconds.
const GAP: f64 = 0.7;
/// md-eval's usual forgiveness around reference boundaries.
const COLLAR: f64 = 0.25;

/// The speaker model folder and resemblyzer's parity reference: the test models' (tools/dev.sh
/// test exports them), else exported here once from the wheel in ATELIER_RESEMBLYZER_WHEEL
/// or the download cache.
fn speaker_model() -> &'static (PathBuf, PathBuf) {
    static DIR: OnceLock<(PathBuf, PathBuf, Option<tempfile::TempDir>)> = OnceLock::new();
    let (model, reference, _) = DIR.get_or_init(|| {
        let installed = common::test_models().join("speaker-resemblyzer");
        let converted = std::env::var_os("ATELIER_TEST_CONVERTED")
            .map(PathBuf::from)
            .unwrap_or_else(|| common::root().join(".cache/converted"))
            .join("speaker-resemblyzer.parity.safetensors");
        if installed.join("manifest.toml").is_file() && converted.is_file() {
            return (installed, converted, None);
        }
        let wheel = std::env::var_os("ATELIER_RESEMBLYZER_WHEEL")
            .map(PathBuf::from)
            .or_else(|| {
                std::fs::read_dir(common::root().join(".cache/downloads"))
                    .ok()?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .find(|p| {
                        p.file_name().is_some_and(|n| {
                            n.to_string_lossy()
                                .to_lowercase()
                                .starts_with("resemblyzer-0.1.4-")
                        })
                    })
            })
            .expect(
                "the resemblyzer wheel: run tools/dev.sh test, or set ATELIER_RESEMBLYZER_WHEEL",
            );
        let tmp = tempfile::tempdir().unwrap();
        let reference = tmp.path().join("parity.safetensors");
        common::export_tool(&[
            "export-speaker",
            "--models",
            tmp.path().join("models").to_str().unwrap(),
            "--cache",
            tmp.path().join("cache").to_str().unwrap(),
            "--wheel",
            wheel.to_str().unwrap(),
            "--parity-ref",
            reference.to_str().unwrap(),
        ]);
        let model = tmp.path().join("models/speaker-resemblyzer");
        (model, reference, Some(tmp))
    });
    // a 'static view of the two paths
    static PATHS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    PATHS.get_or_init(|| (model.clone(), reference.clone()))
}

fn load_speaker() -> SpeakerModel {
    let m = InstalledModel::open(&speaker_model().0).unwrap();
    SpeakerModel::load(&m).unwrap()
}

fn load_vad() -> Vad {
    let m = InstalledModel::open(&common::test_models().join("vad-silero")).unwrap();
    Vad::load(&m).unwrap()
}

/// A models folder with the test models and the speaker model, for the CLI.
fn models_for_cli(dir: &Path) -> PathBuf {
    let models = dir.join("models");
    std::fs::create_dir_all(&models).unwrap();
    for name in ["whisper-tiny.en", "vad-silero"] {
        let src = std::fs::canonicalize(common::test_models().join(name)).unwrap();
        std::os::unix::fs::symlink(src, models.join(name)).unwrap();
    }
    let spk = std::fs::canonicalize(&speaker_model().0).unwrap();
    std::os::unix::fs::symlink(spk, models.join("speaker-resemblyzer")).unwrap();
    models
}

/// The voices: 0 is the LibriVox reader, the rest espeak-ng variants that resemblyzer tells
/// apart (docs/whisper.md lists their pairwise similarity).
const ESPEAK: &[(&str, u32)] = &[
    ("en-gb+f4", 165),
    ("en-us+klatt", 150),
    ("en-us+Michael", 145),
];

const LINES: &[&str] = &[
    "The weather has been strange this week, with rain in the morning and sun by the afternoon.",
    "Did you remember to bring the maps and the keys to the cottage by the lake?",
    "Nobody told me the meeting had moved to Thursday, so I missed the whole thing.",
    "My sister will meet us at the station, and then we can all drive up together.",
    "Please send the report before the end of the day, because it is rather urgent.",
    "I think we should leave early tomorrow, before the roads get busy with traffic.",
];

fn espeak(dir: &Path, voice: usize, line: usize) -> Vec<f32> {
    let (name, speed) = ESPEAK[voice - 1];
    let path = dir.join(format!("espeak-{voice}-{line}.wav"));
    let status = Command::new("espeak-ng")
        .args(["-v", name, "-s", &speed.to_string(), "-w"])
        .arg(&path)
        .arg(LINES[line])
        .status()
        .expect("espeak-ng (apt install espeak-ng)");
    assert!(status.success());
    atelier::media::audio::decode_to_16k_mono(&path).unwrap()
}

fn librivox(i: usize) -> Vec<f32> {
    atelier::media::audio::decode_to_16k_mono(&common::librivox_clips()[i]).unwrap()
}

/// Turns (voice, audio) joined with [`GAP`] of silence; the reference turns are each part's
/// extent, speakers numbered by voice.
fn conversation(parts: Vec<(usize, Vec<f32>)>) -> (Vec<f32>, Vec<Turn>) {
    let mut audio = Vec::new();
    let mut turns = Vec::new();
    for (i, (voice, samples)) in parts.into_iter().enumerate() {
        if i > 0 {
            audio.extend(std::iter::repeat_n(0.0f32, (GAP * RATE) as usize));
        }
        let start = audio.len() as f64 / RATE;
        audio.extend(samples);
        turns.push(Turn {
            start,
            end: audio.len() as f64 / RATE,
            speaker: voice,
        });
    }
    (audio, turns)
}

/// Two voices (LibriVox, espeak f4), five turns, about 30 s.
fn two_voices(dir: &Path) -> (Vec<f32>, Vec<Turn>) {
    conversation(vec![
        (0, librivox(0)),
        (1, espeak(dir, 1, 0)),
        (0, librivox(1)),
        (1, espeak(dir, 1, 5)),
        (0, librivox(2)),
    ])
}

/// Four voices, nine turns, about 55 s.
fn four_voices(dir: &Path) -> (Vec<f32>, Vec<Turn>) {
    conversation(vec![
        (0, librivox(0)),
        (1, espeak(dir, 1, 0)),
        (2, espeak(dir, 2, 1)),
        (3, espeak(dir, 3, 2)),
        (0, librivox(1)),
        (2, espeak(dir, 2, 3)),
        (1, espeak(dir, 1, 5)),
        (3, espeak(dir, 3, 4)),
        (0, librivox(2)),
    ])
}

fn engine_turns(audio: &[f32], count: SpeakerCount) -> (Vec<Turn>, usize) {
    let vad = load_vad();
    let probs = vad.speech_probs(audio).unwrap();
    let speech = speech_timestamps(&probs, audio.len(), &vad.params);
    let d = diarize(
        &load_speaker(),
        audio,
        &speech,
        &DiarizeOptions {
            count,
            names: Vec::new(),
        },
    )
    .unwrap();
    (d.turns, d.speakers)
}

fn duration(audio: &[f32]) -> f64 {
    audio.len() as f64 / RATE
}

#[test]
fn embeddings_match_resemblyzer() {
    let model = load_speaker();
    let reference = tch::Tensor::read_safetensors(&speaker_model().1).unwrap();
    let get = |k: &str| {
        let t = &reference.iter().find(|(n, _)| n == k).unwrap().1;
        Vec::<f32>::try_from(t).unwrap()
    };
    for i in 0..2 {
        let wav = get(&format!("wav{i}"));
        let want = get(&format!("embed{i}"));
        let got = model.embed_utterance(&wav).unwrap();
        let dot: f32 = got.iter().zip(&want).map(|(a, b)| a * b).sum();
        let norms = got.iter().map(|x| x * x).sum::<f32>().sqrt()
            * want.iter().map(|x| x * x).sum::<f32>().sqrt();
        let cos = dot / norms;
        eprintln!("parity: clip {i}: cosine vs resemblyzer's embed_utterance {cos:.7}");
        // the same float32 network; only the FFT differs (~1e-7 relative)
        assert!(cos >= 0.9999, "clip {i}: cosine {cos}");
    }
}

#[test]
fn two_and_four_voices_engine_der() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, (audio, reference), expect, bound) in [
        ("2 voices", two_voices(tmp.path()), 2, 0.10),
        ("4 voices", four_voices(tmp.path()), 4, 0.15),
    ] {
        let (turns, speakers) = engine_turns(&audio, SpeakerCount::default());
        let strict = der(&reference, &turns, duration(&audio), 0.0);
        let collared = der(&reference, &turns, duration(&audio), COLLAR);
        eprintln!(
            "{name}: {speakers} speakers estimated; engine DER {:.1}% (missed {:.2} s, false alarm {:.2} s, confusion {:.2} s of {:.1} s), {:.1}% with a {COLLAR} s collar",
            100.0 * strict.der,
            strict.missed,
            strict.false_alarm,
            strict.confusion,
            strict.reference,
            100.0 * collared.der
        );
        assert_eq!(speakers, expect, "{name}: {turns:?}");
        assert!(collared.der <= bound, "{name}: DER {:?}", collared);
        // the count given: the same speakers
        let exact = SpeakerCount {
            exact: Some(expect),
            ..SpeakerCount::default()
        };
        let (_, given) = engine_turns(&audio, exact);
        assert_eq!(given, expect);
    }
}

#[test]
fn one_voice_is_one_speaker_and_silence_is_none() {
    let audio: Vec<f32> = (0..5).flat_map(librivox).collect();
    let (turns, speakers) = engine_turns(&audio, SpeakerCount::default());
    assert_eq!(speakers, 1, "{turns:?}");
    assert!(!turns.is_empty());
    let (turns, speakers) = engine_turns(&vec![0.0; 10 * 16_000], SpeakerCount::default());
    assert_eq!((speakers, turns.len()), (0, 0));
}

/// Reads the RTTM lines `SPEAKER file 1 start dur <NA> <NA> name <NA> <NA>` as turns, the
/// names numbered in order of appearance.
fn read_rttm(text: &str) -> Vec<Turn> {
    let mut names: Vec<String> = Vec::new();
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 10, "{l}");
            assert_eq!(
                (f[0], f[2], f[5], f[6], f[8], f[9]),
                ("SPEAKER", "1", "<NA>", "<NA>", "<NA>", "<NA>")
            );
            let start: f64 = f[3].parse().unwrap();
            let dur: f64 = f[4].parse().unwrap();
            let speaker = names.iter().position(|n| n == f[7]).unwrap_or_else(|| {
                names.push(f[7].to_string());
                names.len() - 1
            });
            Turn {
                start,
                end: start + dur,
                speaker,
            }
        })
        .collect()
}

/// The reference speaker at `t`: the turn holding it, else the nearest.
fn reference_speaker(reference: &[Turn], t: f64) -> usize {
    reference
        .iter()
        .min_by(|a, b| {
            let d = |x: &Turn| (x.start - t).max(t - x.end).max(0.0);
            d(a).total_cmp(&d(b))
        })
        .unwrap()
        .speaker
}

#[test]
fn cli_attributes_words_and_writes_rttm() {
    let tmp = tempfile::tempdir().unwrap();
    let models = models_for_cli(tmp.path());
    for (name, (audio, reference), bound_der, bound_words) in [
        ("two", two_voices(tmp.path()), 0.10, 0.95),
        ("four", four_voices(tmp.path()), 0.15, 0.90),
    ] {
        let wav = tmp.path().join(format!("{name}.wav"));
        common::write_wav(&wav, &audio);
        let out = tmp.path().join(format!("out-{name}"));
        let run = common::atelier()
            .env("ATELIER_MODELS", &models)
            .env("XDG_STATE_HOME", tmp.path())
            .env("ATELIER_CONFIG_DIR", tmp.path().join("config"))
            .args([
                "transcribe",
                "--model",
                "whisper-tiny.en",
                "--diarize",
                "--verbose",
                "false",
            ])
            .arg(&wav)
            .args(["-o", out.to_str().unwrap(), "-f", "json"])
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let json: Value = serde_json::from_str(
            &std::fs::read_to_string(out.join(format!("{name}.json"))).unwrap(),
        )
        .unwrap();
        // words: hypothesis speaker names → reference voices by the best one-to-one map
        let mut names: Vec<String> = Vec::new();
        let mut words: Vec<(usize, usize)> = Vec::new();
        for seg in json["segments"].as_array().unwrap() {
            let seg_speaker = seg["speaker"]
                .as_str()
                .expect("every segment has a speaker");
            for w in seg["words"].as_array().unwrap() {
                let s = w["speaker"].as_str().expect("every word has a speaker");
                assert_eq!(s, seg_speaker, "a segment holds one speaker's words");
                let mid = (w["start"].as_f64().unwrap() + w["end"].as_f64().unwrap()) / 2.0;
                let h = names.iter().position(|n| n == s).unwrap_or_else(|| {
                    names.push(s.to_string());
                    names.len() - 1
                });
                words.push((h, reference_speaker(&reference, mid)));
            }
        }
        let voices = reference.iter().map(|t| t.speaker + 1).max().unwrap();
        let mut counts = vec![vec![0.0; voices]; names.len()];
        for &(h, r) in &words {
            counts[h][r] += 1.0;
        }
        let mapping = best_mapping(&counts);
        let right = words
            .iter()
            .filter(|&&(h, r)| mapping[h] == Some(r))
            .count();
        let accuracy = right as f64 / words.len() as f64;
        // the RTTM of the same transcript (a second Whisper run would double the test's time)
        let transcript: Transcript = serde_json::from_value(json.clone()).unwrap();
        let rttm = read_rttm(&write(Format::Rttm, &transcript, &WriterOptions::default()));
        let file_der = der(&reference, &rttm, duration(&audio), COLLAR);
        eprintln!(
            "{name}: {} speakers in the JSON; speaker-attributed word accuracy {:.1}% ({right}/{}); RTTM DER {:.1}% with a {COLLAR} s collar ({:.1}% without)",
            names.len(),
            100.0 * accuracy,
            words.len(),
            100.0 * file_der.der,
            100.0 * der(&reference, &rttm, duration(&audio), 0.0).der
        );
        assert_eq!(names.len(), voices);
        assert!(accuracy >= bound_words, "{name}: word accuracy {accuracy}");
        assert!(file_der.der <= bound_der, "{name}: RTTM DER {file_der:?}");
    }
}

#[test]
fn cli_reports_too_short_and_refuses_bad_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let models = models_for_cli(tmp.path());
    let cli = || {
        let mut c = common::atelier();
        c.env("ATELIER_MODELS", &models)
            .env("XDG_STATE_HOME", tmp.path())
            .env("ATELIER_CONFIG_DIR", tmp.path().join("config"))
            .args([
                "transcribe",
                "--model",
                "whisper-tiny.en",
                "--verbose",
                "false",
            ]);
        c
    };
    // one word, about 0.4 s: speech too short to embed
    let word: Vec<f32> = {
        let mut w = espeak(tmp.path(), 1, 0);
        w.truncate((0.45 * RATE) as usize);
        let mut a = vec![0.0f32; 8_000];
        a.extend(w);
        a.extend(vec![0.0f32; 8_000]);
        a
    };
    let short = tmp.path().join("short.wav");
    common::write_wav(&short, &word);
    let out = tmp.path().join("out");
    let run = cli()
        .args(["--diarize", "-f", "json", "-o", out.to_str().unwrap()])
        .arg(&short)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("short.wav") && stderr.contains("too short to tell speakers apart"),
        "{stderr}"
    );
    // silence: no speech, no speakers, no crash
    let silence = tmp.path().join("silence.wav");
    common::write_wav(&silence, &vec![0.0; 3 * 16_000]);
    let run = cli()
        .args(["--diarize", "-f", "rttm", "-o", out.to_str().unwrap()])
        .arg(&silence)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(out.join("silence.rttm")).unwrap(),
        ""
    );
    for (args, message) in [
        (vec!["-f", "rttm"], "--output-format rttm needs --diarize"),
        (vec!["--speakers", "2"], "need --diarize"),
        (vec!["--diarize", "--no-vad"], "--diarize needs the VAD"),
        (
            vec!["--diarize", "--min-speakers", "3", "--max-speakers", "2"],
            "--min-speakers 3 is more than --max-speakers 2",
        ),
        (
            vec!["--diarize", "--speaker-names", "Alice,,Bob"],
            "a name is empty",
        ),
    ] {
        let run = cli().args(&args).arg(&short).output().unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    }
}

/// `atelier watch` with this test's models (the speaker encoder included) and config.
fn watch_cmd(home: &Path, models: &Path, config: &str, args: &[&str]) -> std::process::Output {
    std::fs::create_dir_all(home.join("config")).unwrap();
    std::fs::write(home.join("config/config.toml"), config).unwrap();
    common::atelier()
        .env("ATELIER_MODELS", models)
        .env("XDG_STATE_HOME", home.join("state"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env("ATELIER_CONFIG_DIR", home.join("config"))
        .env_remove("ATELIER_LOG")
        .arg("watch")
        .args(args)
        .args(["--queue", home.join("queue.sqlite").to_str().unwrap()])
        .args(["--stable-ms", "200", "--exit-when-idle", "--json"])
        .output()
        .unwrap()
}

/// Checks a diarized job's outputs of `stem` in `dir` against the reference turns: every
/// segment and word of the JSON has a speaker, two of them; SRT and VTT carry them; the RTTM
/// names the recording by the input's stem and scores within the CLI test's bound.
fn check_watch_outputs(dir: &Path, stem: &str, file_id: &str, reference: &[Turn], seconds: f64) {
    let read = |ext: &str| {
        std::fs::read_to_string(dir.join(format!("{stem}.{ext}")))
            .unwrap_or_else(|e| panic!("{stem}.{ext}: {e}"))
    };
    let json: Value = serde_json::from_str(&read("json")).unwrap();
    let mut names: Vec<&str> = Vec::new();
    for seg in json["segments"].as_array().unwrap() {
        let s = seg["speaker"]
            .as_str()
            .expect("every segment has a speaker");
        for w in seg["words"].as_array().expect("diarized jobs have words") {
            assert_eq!(w["speaker"].as_str(), Some(s));
        }
        if !names.contains(&s) {
            names.push(s);
        }
    }
    assert_eq!(names, ["SPEAKER_00", "SPEAKER_01"], "{stem}");
    assert!(read("srt").contains("[SPEAKER_01]: "), "{stem}.srt");
    assert!(read("vtt").contains("<v Speaker 2>"), "{stem}.vtt");
    let rttm_text = read("rttm");
    for line in rttm_text.lines() {
        assert_eq!(line.split_whitespace().nth(1), Some(file_id), "{line}");
    }
    let rttm = read_rttm(&rttm_text);
    let d = der(reference, &rttm, seconds, COLLAR);
    eprintln!(
        "watch {stem}: RTTM DER {:.1}% with a {COLLAR} s collar",
        100.0 * d.der
    );
    assert!(d.der <= 0.10, "{stem}: RTTM DER {d:?}");
}

#[test]
fn watch_diarizes_by_profile_key_and_by_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tmp.path()).unwrap();
    let models = models_for_cli(&root);
    let (audio, reference) = two_voices(&root);
    let seconds = duration(&audio);
    let config = |profiles: &str| format!("[whisper]\nbeam-size = 1\n{profiles}");

    // a [[watch]] profile with `diarize = true`; a plain profile beside it has no speakers
    let talks = root.join("talks");
    let plain = root.join("plain");
    for d in [&talks, &plain] {
        std::fs::create_dir_all(d).unwrap();
        common::write_wav(&d.join("two voices.wav"), &audio);
    }
    let profiles = format!(
        "[[watch]]\nname = \"talks\"\npath = \"{}\"\nkind = \"transcribe\"\ndiarize = true\nmax-speakers = 4\n\
         [[watch]]\nname = \"plain\"\npath = \"{}\"\nkind = \"transcribe\"\nformats = [\"json\"]\n",
        talks.display(),
        plain.display()
    );
    let run = watch_cmd(&root.join("home1"), &models, &config(&profiles), &[]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    // the config's formats, and RTTM with the input's stem as its file id (space as `_`)
    for ext in ["txt", "srt", "vtt", "tsv", "json", "rttm"] {
        assert!(talks.join(format!("two voices.{ext}")).is_file(), "{ext}");
    }
    check_watch_outputs(&talks, "two voices", "two_voices", &reference, seconds);
    let plain_json = std::fs::read_to_string(plain.join("two voices.json")).unwrap();
    assert!(!plain_json.contains("\"speaker\""), "{plain_json}");
    assert!(!plain.join("two voices.rttm").exists());

    // ad hoc: `atelier watch DIR --diarize --speakers 2`, the formats named
    let inbox = root.join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    common::write_wav(&inbox.join("talk.wav"), &audio);
    let run = watch_cmd(
        &root.join("home2"),
        &models,
        &config(""),
        &[
            inbox.to_str().unwrap(),
            "--diarize",
            "--speakers",
            "2",
            "-f",
            "json,srt,vtt,rttm",
        ],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(!inbox.join("talk.txt").exists(), "only the formats named");
    check_watch_outputs(&inbox, "talk", "talk", &reference, seconds);
}

#[test]
fn watch_refuses_bad_speaker_settings_naming_the_file_and_profile() {
    let tmp = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tmp.path()).unwrap();
    let models = root.join("models");
    std::fs::create_dir_all(&models).unwrap();
    let inbox = root.join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let profile = |keys: &str| {
        format!(
            "[[watch]]\nname = \"talks\"\npath = \"{}\"\nkind = \"transcribe\"\n{keys}\n",
            inbox.display()
        )
    };
    for (keys, message) in [
        (
            "diarize = true\nmin-speakers = 3\nmax-speakers = 2",
            "min-speakers 3 is more than max-speakers 2",
        ),
        (
            "diarize = true\nspeakers = 0",
            "speakers must be at least 1",
        ),
        (
            "diarize = true\nmin-speakers = 0",
            "min-speakers must be at least 1",
        ),
        (
            "diarize = true\nspeakers = 2\nmax-speakers = 3",
            "speakers cannot be combined with min-speakers or max-speakers",
        ),
        ("speakers = 2", "need diarize = true"),
        (
            "diarize = true\nvad = false",
            "diarize = true needs the VAD",
        ),
        ("diarize = \"yes\"", "diarize"),
    ] {
        let home = root.join("home");
        let run = watch_cmd(&home, &models, &profile(keys), &[]);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{keys}: {stderr}");
        let config = home.join("config/config.toml");
        assert!(
            stderr.contains(&config.display().to_string()) && stderr.contains(message),
            "{keys}: {stderr}"
        );
        if !keys.contains('"') {
            assert!(stderr.contains("watch[0] (talks)"), "{keys}: {stderr}");
        }
    }
    // the flags, before any model is loaded
    for (args, message) in [
        (vec!["--diarize", "--no-vad"], "--diarize needs the VAD"),
        (
            vec!["--diarize", "--min-speakers", "3", "--max-speakers", "2"],
            "--min-speakers 3 is more than --max-speakers 2",
        ),
        (
            vec!["--diarize", "--speakers", "0"],
            "--speakers must be at least 1",
        ),
        (
            vec!["--diarize", "--kind", "tag"],
            "--diarize is for --kind transcribe",
        ),
    ] {
        let mut all = vec![inbox.to_str().unwrap()];
        all.extend(&args);
        let run = watch_cmd(&root.join("home-flags"), &models, "", &all);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    }
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// The diarization stage on an hour of speech (docs/benchmarks.md, "Speaker diarization"):
/// the five LibriVox clips with 0.6–3 s silences, repeated to 3600 s; the VAD (which a
/// plain transcription runs too) is not counted. A measurement, not a check.
#[test]
#[ignore = "a measurement: cargo test --release --test diarize -- --ignored --nocapture hour"]
fn hour_of_speech_diarization_cost() {
    let clips: Vec<Vec<f32>> = (0..5).map(librivox).collect();
    let silences = [0.8, 1.5, 0.6, 3.0, 1.1];
    let n = 3600 * 16_000;
    let mut audio = Vec::with_capacity(n);
    while audio.len() < n {
        for (c, s) in clips.iter().zip(silences) {
            audio.extend_from_slice(c);
            audio.extend(std::iter::repeat_n(0.0f32, (s * RATE) as usize));
        }
    }
    audio.truncate(n);
    let vad = load_vad();
    let probs = vad.speech_probs(&audio).unwrap();
    let speech = speech_timestamps(&probs, audio.len(), &vad.params);
    let model = load_speaker();
    let (wall, cpu) = (std::time::Instant::now(), cpu_seconds());
    let d = diarize(&model, &audio, &speech, &DiarizeOptions::default()).unwrap();
    let (wall, cpu) = (wall.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    // the clustering alone, on as many unit vectors (kodama's time depends on n, not on them)
    let mut x: u64 = 1;
    let mut rand = || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let vectors: Vec<Vec<f32>> = (0..d.windows)
        .map(|_| {
            let v: Vec<f32> = (0..256).map(|_| rand()).collect();
            let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
            v.into_iter().map(|a| a / norm).collect()
        })
        .collect();
    let c = std::time::Instant::now();
    atelier::engine::speaker::cluster::cluster(
        &vectors,
        SpeakerCount::default(),
        atelier::engine::speaker::cluster::DISTANCE_THRESHOLD,
    );
    let cluster_wall = c.elapsed().as_secs_f64();
    let speech_s: f64 = speech.iter().map(|(a, b)| (b - a) as f64 / RATE).sum();
    eprintln!(
        "hour: {speech_s:.0} s of speech in {} ranges; {} windows; {} speakers; diarization {wall:.1} s wall, {cpu:.1} s CPU; clustering {} windows alone {cluster_wall:.1} s wall",
        speech.len(),
        d.windows,
        d.speakers,
        d.windows
    );
    assert_eq!(d.speakers, 1, "one reader");
}
