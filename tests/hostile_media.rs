//! Hostile media, generated here: each file gets its expected one-line error naming the file
//! and the problem, the process never aborts, and its peak memory stays under a stated bound
//! (ru_maxrss of that exact child, from wait4). No timing is asserted.
mod common;

use common::hostile_images;

use atelier::engine::clip::preprocess::{load_image, PreprocessConfig};
use std::path::Path;

/// Peak RSS allowed for `atelier transcribe` on one hostile file: libtorch, whisper-tiny.en
/// and the decoder take a few hundred MB; the hostile headers would take 34 GB unchecked.
const AUDIO_RSS_BOUND_KB: i64 = 1536 * 1024;

fn wav(
    rate: u32,
    channels: u16,
    bits: u16,
    data_len: u32,
    riff_len: Option<u32>,
    data: &[u8],
) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&riff_len.unwrap_or(36 + data.len() as u32).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&channels.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    let align = u32::from(channels) * u32::from(bits) / 8;
    b.extend_from_slice(&rate.wrapping_mul(align).to_le_bytes());
    b.extend_from_slice(&(align as u16).to_le_bytes());
    b.extend_from_slice(&bits.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    b.extend_from_slice(data);
    b
}

fn flac_bad_streaminfo() -> Vec<u8> {
    let mut b = b"fLaC".to_vec();
    // Last metadata block, STREAMINFO, 34 bytes: block sizes 65535/65535, rate 0, 8 channels.
    b.extend_from_slice(&[0x80, 0, 0, 34]);
    b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
    b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    b.extend_from_slice(&[0, 0, 0x0e, 0xf0, 0, 0, 0, 0]);
    b.extend_from_slice(&[0; 16]);
    b.extend_from_slice(&[0xff; 64]);
    b
}

fn mp4_huge_box() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&20u32.to_be_bytes());
    b.extend_from_slice(b"ftypM4A \0\0\0\0M4A ");
    b.extend_from_slice(&1u32.to_be_bytes());
    b.extend_from_slice(b"moov");
    b.extend_from_slice(&u64::MAX.to_be_bytes());
    b.extend_from_slice(&[0; 32]);
    b
}

/// Runs `atelier transcribe FILES` and returns (exit code, stderr, peak RSS in KB).
fn transcribe(
    state: &Path,
    out: &Path,
    files: &[&Path],
    env: &[(&str, &str)],
) -> (i32, String, i64) {
    let mut cmd = common::atelier_with_models(state);
    cmd.arg("transcribe")
        .args(files)
        .args(["--model", "whisper-tiny.en", "--output-dir"])
        .arg(out);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let m = common::run_measured(&mut cmd);
    (m.code, m.stderr, m.max_rss_kb)
}

#[test]
fn hostile_audio_is_refused_by_name_within_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "rate.wav",
            wav(4_000_000_001, 1, 16, 24, None, &[0; 24]),
            "sample rate 4000000001 Hz is over the limit of 384000 Hz",
        ),
        (
            "zero_ch.wav",
            wav(16_000, 0, 16, 24, None, &[0; 24]),
            "invalid channel count",
        ),
        (
            "many_ch.wav",
            wav(16_000, 65535, 16, 24, None, &[0; 24]),
            "channel",
        ),
        (
            "truncated.wav",
            wav(16_000, 1, 16, 24, None, &[])[..30].to_vec(),
            "truncated.wav:",
        ),
        (
            "data_lies.wav",
            wav(16_000, 1, 16, u32::MAX, None, &[0; 2]),
            "data_lies.wav:",
        ),
        (
            "riff_lies.wav",
            wav(16_000, 1, 16, 0, Some(u32::MAX), &[]),
            "riff_lies.wav:",
        ),
        ("streaminfo.flac", flac_bad_streaminfo(), "streaminfo.flac:"),
        ("huge_box.m4a", mp4_huge_box(), "huge_box.m4a:"),
        ("empty.wav", Vec::new(), "the file is empty"),
        (
            "noise.mp3",
            b"this is not audio at all, just some text bytes".repeat(20),
            "noise.mp3:",
        ),
    ];
    for (name, bytes, expect) in &cases {
        let path = d.join(name);
        std::fs::write(&path, bytes).unwrap();
        let (code, stderr, rss) = transcribe(&d.join("state"), &d.join("out"), &[&path], &[]);
        eprintln!(
            "{name}: exit {code}, peak RSS {} MiB: {}",
            rss / 1024,
            stderr.trim()
        );
        assert_ne!(code, 0, "{name} was accepted:\n{stderr}");
        let line = stderr
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name}: no error naming the file:\n{stderr}"));
        assert!(
            line.contains(expect),
            "{name}: expected {expect:?} in {line:?}"
        );
        assert!(!stderr.contains("panicked"), "{name}: a panic:\n{stderr}");
        assert!(
            rss < AUDIO_RSS_BOUND_KB,
            "{name}: peak RSS {rss} KB over {AUDIO_RSS_BOUND_KB} KB"
        );
    }
}

#[test]
fn hostile_audio_in_a_batch_leaves_the_good_files_done() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let bad = d.join("bad.wav");
    std::fs::write(&bad, wav(4_000_000_001, 1, 16, 24, None, &[0; 24])).unwrap();
    let good = d.join("good.wav");
    common::write_wav(&good, &vec![0.0; 16_000]);
    let (code, stderr, _) = transcribe(&d.join("state"), &d.join("out"), &[&bad, &good], &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("bad.wav: sample rate"), "{stderr}");
    assert!(
        d.join("out/good.txt").exists(),
        "the good file was not transcribed:\n{stderr}"
    );
    assert!(!d.join("out/bad.txt").exists());
}

/// `atelier transcribe` never replaces a user's file at an output name: the transcript takes
/// `NAME.1.EXT` and says so; a rerun replaces its own output (no `NAME.2.EXT`), and a hand
/// edit of that output makes it the user's.
#[test]
fn transcribe_keeps_a_users_file_and_reruns_replace_their_own() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let clip = d.join("clip.wav");
    std::fs::copy(&common::librivox_clips()[0], &clip).unwrap();
    let out = d.join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("clip.txt"), "my own notes\n").unwrap();
    let state = d.join("state");
    let (code, stderr, _) = transcribe(&state, &out, &[&clip], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        std::fs::read_to_string(out.join("clip.txt")).unwrap(),
        "my own notes\n"
    );
    assert!(
        stderr.contains("clip.txt is not Atelier's transcript"),
        "{stderr}"
    );
    let ours = std::fs::read_to_string(out.join("clip.1.txt")).unwrap();
    assert!(ours.to_lowercase().contains("the"), "{ours}");
    assert!(out.join("clip.json").exists());

    let (code, stderr, _) = transcribe(&state, &out, &[&clip], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !out.join("clip.2.txt").exists(),
        "a rerun took a new name:\n{stderr}"
    );
    assert!(!out.join("clip.1.json").exists());

    std::fs::write(out.join("clip.1.txt"), "edited by hand\n").unwrap();
    let (code, stderr, _) = transcribe(&state, &out, &[&clip], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        std::fs::read_to_string(out.join("clip.1.txt")).unwrap(),
        "edited by hand\n"
    );
    assert!(out.join("clip.2.txt").exists(), "{stderr}");
}

#[test]
fn a_decoder_panic_is_an_error_not_a_short_transcript() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let long = d.join("long.wav");
    common::write_wav(&long, &vec![0.0; 16_000 * 45]);
    let (code, stderr, _) = transcribe(
        &d.join("state"),
        &d.join("out"),
        &[&long],
        &[("ATELIER_TEST_PANIC_DECODING", "long.wav")],
    );
    assert_ne!(code, 0, "a truncated stream was accepted:\n{stderr}");
    assert!(
        stderr.contains("long.wav: the audio decoder failed"),
        "{stderr}"
    );
    assert!(
        !d.join("out/long.txt").exists(),
        "a truncated transcript was written"
    );
}

#[test]
fn hostile_images_are_refused_or_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let cfg = PreprocessConfig::default();
    // Long thin images are valid: they must be tagged at crop cost, not rejected.
    for (name, w, h) in hostile_images::LONG_THIN {
        let path = d.join(name);
        std::fs::write(&path, hostile_images::png(w, h, 2, None)).unwrap();
        let out = load_image(&path, &cfg).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.len(), 3 * 224 * 224, "{name}");
    }
    let cases = hostile_images::cases();
    for (name, bytes, expect) in &cases {
        let path = d.join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = load_image(&path, &cfg)
            .err()
            .unwrap_or_else(|| panic!("{name} was accepted"));
        let msg = err.to_string();
        eprintln!("{name}: {msg}");
        assert!(
            msg.contains(name) && msg.contains(expect),
            "{name}: expected {expect:?} in {msg:?}"
        );
        assert!(!msg.contains('\n'), "{name}: not one line: {msg:?}");
    }
}
