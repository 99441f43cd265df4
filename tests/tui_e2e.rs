//! The TUI end to end in a real terminal (tmux): start `atelier DIR`, read the screen, send
//! keys, check the files it writes, quit, and check the terminal is restored.
//! 1. transcripts: a LibriVox clip with Whisper tiny.en (the test models);
//! 2. tagging: a random-weight CLIP exported in this run (the keyboard flow and the sidecars,
//!    not the tag quality);
//! 3. generating: a tiny random-weight SD 1.5 exported in this run (prompt, seed lock, compare,
//!    the PNGs and their parameters, the same pixels as `atelier generate`);
//! 4. one queue: the TUI's job seen by `atelier queue list`, and jobs `atelier watch` queues
//!    on the same journal seen in the TUI's queue pane.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long to wait for something to appear on screen (a slow shared CI machine; the test
/// fails with the screen printed when it is not there).
const WAIT: Duration = Duration::from_secs(240);

struct Tmux {
    name: String,
}

impl Tmux {
    fn start(name: &str, env: &[(&str, &Path)], args: &[&Path]) -> Tmux {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", name])
            .output();
        let mut cmd = Command::new("tmux");
        cmd.args(["new-session", "-d", "-s", name, "-x", "200", "-y", "60"]);
        for (k, v) in env {
            cmd.arg("-e").arg(format!("{k}={}", v.display()));
        }
        let bin = env!("CARGO_BIN_EXE_atelier");
        let mut line = format!("'{bin}'");
        for a in args {
            line.push_str(&format!(" '{}'", a.display()));
        }
        // After atelier exits, the shell prints its status and keeps the pane open.
        line.push_str("; echo ATELIER-EXITED-$?; sleep 600");
        cmd.arg(line);
        let out = cmd.output().expect("tmux (apt install tmux)");
        assert!(
            out.status.success(),
            "tmux: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmux {
            name: name.to_string(),
        }
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            let st = Command::new("tmux")
                .args(["send-keys", "-t", &self.name, k])
                .status()
                .unwrap();
            assert!(st.success());
            // Keys are sent one by one so each is its own terminal event.
            std::thread::sleep(Duration::from_millis(60));
        }
    }

    fn text(&self, text: &str) {
        let st = Command::new("tmux")
            .args(["send-keys", "-l", "-t", &self.name, text])
            .status()
            .unwrap();
        assert!(st.success());
        std::thread::sleep(Duration::from_millis(100));
    }

    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(
                start.elapsed() < WAIT,
                "timed out waiting for {what}; the screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// With ATELIER_TUI_SCREENSHOTS=DIR, saves the screen as DIR/NAME.txt (docs/tui.md).
    fn screenshot(&self, name: &str) {
        if let Some(dir) = std::env::var_os("ATELIER_TUI_SCREENSHOTS") {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(Path::new(&dir).join(format!("{name}.txt")), self.screen()).unwrap();
        }
    }

    fn alternate_on(&self) -> bool {
        let out = Command::new("tmux")
            .args(["display-message", "-p", "-t", &self.name, "#{alternate_on}"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    }

    /// Quits with `q` and checks the terminal is back: main screen, atelier's status 0.
    fn quit_and_check_restored(&self) {
        assert!(self.alternate_on(), "the TUI runs on the alternate screen");
        self.keys(&["q"]);
        let s = self.wait_for("atelier to exit", |s| s.contains("ATELIER-EXITED-"));
        assert!(s.contains("ATELIER-EXITED-0"), "exit status:\n{s}");
        assert!(!self.alternate_on(), "the alternate screen is left");
        assert!(
            !s.contains("Library"),
            "the panes are gone from the screen:\n{s}"
        );
        let mode = Command::new("tmux")
            .args([
                "display-message",
                "-p",
                "-t",
                &self.name,
                "#{mouse_any_flag}#{cursor_flag}",
            ])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&mode.stdout).trim(),
            "01",
            "mouse capture off, cursor shown"
        );
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .output();
    }
}

fn write_config(dir: &Path, extra: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        format!("device = \"cpu\"\n[ui]\nimage-protocol = \"halfblocks\"\n{extra}"),
    )
    .unwrap();
}

#[test]
fn transcribe_edit_save_quit() {
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    // The shortest LibriVox clip (3 s) keeps the test quick on a CPU.
    let clip = common::librivox_clips()
        .into_iter()
        .find(|p| p.to_string_lossy().contains("0870"))
        .unwrap_or_else(|| common::librivox_clips()[1].clone());
    let audio = media.join("speech.wav");
    std::fs::copy(&clip, &audio).unwrap();
    let config = tmp.path().join("config");
    write_config(
        &config,
        "[whisper]\nmodel = \"whisper-tiny.en\"\nbeam-size = 1\n",
    );
    let state = tmp.path().join("state");
    let models = common::test_models();
    let t = Tmux::start(
        "atelier-e2e-transcript",
        &[
            ("ATELIER_MODELS", &models),
            ("XDG_STATE_HOME", &state),
            ("ATELIER_CONFIG_DIR", &config),
            ("XDG_DATA_HOME", &tmp.path().join("data")),
        ],
        &[&media],
    );
    t.wait_for("the first frame", |s| {
        s.contains("Library") && s.contains("Transcript")
    });
    let s = t.wait_for("the transcript to be made", |s| {
        s.contains("speech.wav · ") && s.contains(" done")
    });
    assert!(s.contains("00:00.000"), "segments with timestamps:\n{s}");
    // The file Whisper wrote.
    let txt = media.join("speech.txt");
    let first = std::fs::read_to_string(&txt).unwrap();
    assert!(!first.trim().is_empty());
    // Navigate to the transcript, edit the first segment, save.
    t.keys(&["2", "g", "e"]);
    t.wait_for("the segment editor", |s| s.contains("edit segment"));
    // At the start of the text, so it stays on screen however long the segment is.
    t.keys(&["Home"]);
    t.text("EDITED BY THE TEST ");
    t.keys(&["Enter"]);
    t.wait_for("the edit on screen", |s| {
        s.contains("EDITED BY THE TEST") && s.contains("modified")
    });
    t.keys(&["w"]);
    t.wait_for("the save", |s| {
        s.contains("saved ") && !s.contains("modified")
    });
    t.screenshot("transcript");
    for ext in ["txt", "srt", "vtt", "tsv", "json"] {
        let p = media.join(format!("speech.{ext}"));
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.contains("EDITED BY THE TEST"),
            "{} lacks the edit:\n{text}",
            p.display()
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(media.join("speech.json")).unwrap()).unwrap();
    assert!(json["segments"][0]["text"]
        .as_str()
        .unwrap()
        .contains("EDITED BY THE TEST"));
    assert!(json["text"]
        .as_str()
        .unwrap()
        .contains("EDITED BY THE TEST"));
    // No temp files are left beside the outputs.
    let names: Vec<String> = std::fs::read_dir(&media)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains("tmp")), "{names:?}");
    t.quit_and_check_restored();
}

fn write_png(path: &Path, rgb: [u8; 3]) {
    let img = image::RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([
            rgb[0].wrapping_add(x as u8),
            rgb[1].wrapping_add(y as u8),
            rgb[2],
        ])
    });
    img.save(path).unwrap();
}

#[test]
fn tag_select_apply_undo_quit() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    common::export_tool(&[
        "import-clip",
        "--random-init",
        "ViT-B-32",
        "--name",
        "clip-rand-tui",
        "--models",
        models.to_str().unwrap(),
    ]);
    let media = tmp.path().join("images");
    std::fs::create_dir_all(&media).unwrap();
    let images: Vec<PathBuf> = (0..3).map(|i| media.join(format!("img{i}.png"))).collect();
    for (i, p) in images.iter().enumerate() {
        write_png(p, [40 * i as u8, 200 - 50 * i as u8, 90]);
    }
    let config = tmp.path().join("config");
    write_config(&config, "[clip]\nmodel = \"clip-rand-tui\"\n");
    let state = tmp.path().join("state");
    let t = Tmux::start(
        "atelier-e2e-tags",
        &[
            ("ATELIER_MODELS", &models),
            ("XDG_STATE_HOME", &state),
            ("ATELIER_CONFIG_DIR", &config),
            ("XDG_DATA_HOME", &tmp.path().join("data")),
        ],
        &[&media],
    );
    t.wait_for("the images to be scored", |s| {
        s.contains("3 images") && !s.contains("scoring") && s.contains("img2.png")
    });
    // Select img0..img1 with a visual range, accept the top tag, add a custom one, apply.
    t.keys(&["3", "g", "v", "j"]);
    t.wait_for("the selection", |s| s.contains("2 selected"));
    t.screenshot("tags");
    t.keys(&["a", "+"]);
    t.wait_for("the custom tag prompt", |s| s.contains("custom tag"));
    t.text("handmade");
    t.keys(&["Enter", "w"]);
    t.wait_for("the sidecars", |s| s.contains("wrote 2 sidecar(s)"));
    let sidecar = |i: usize, ext: &str| media.join(format!("img{i}.{ext}"));
    for i in 0..2 {
        let caption = std::fs::read_to_string(sidecar(i, "txt")).unwrap();
        assert!(caption.contains("handmade"), "img{i}.txt: {caption}");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(sidecar(i, "tags.json")).unwrap())
                .unwrap();
        let labels: Vec<&str> = json["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["label"].as_str().unwrap())
            .collect();
        assert!(labels.contains(&"handmade"), "{labels:?}");
        // The top proposals (3) plus the custom tag.
        assert_eq!(labels.len(), 4, "{labels:?}");
    }
    assert!(!sidecar(2, "txt").exists(), "img2 was not selected");
    // Undo the apply: the sidecars did not exist before, so they are removed.
    t.keys(&["u"]);
    let start = Instant::now();
    while sidecar(0, "txt").exists() || sidecar(1, "tags.json").exists() {
        assert!(
            start.elapsed() < WAIT,
            "undo did not remove the sidecars:\n{}",
            t.screen()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    t.quit_and_check_restored();
}

/// The PNGs in `dir`, sorted by name (`NNNNN-SEED.png`).
fn pngs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "png"));
    v.sort();
    v
}

fn wait_for_pngs(t: &Tmux, dir: &Path, n: usize) -> Vec<PathBuf> {
    let start = Instant::now();
    loop {
        let found = pngs(dir);
        if found.len() >= n {
            return found;
        }
        assert!(
            start.elapsed() < WAIT,
            "timed out waiting for {n} PNG(s) in {}; the screen:\n{}",
            dir.display(),
            t.screen()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The seed in `NNNNN-SEED.png`.
fn seed_of(png: &Path) -> u64 {
    let name = png.file_stem().unwrap().to_string_lossy().into_owned();
    name.split_once('-').unwrap().1.parse().unwrap()
}

/// 3. generating: a tiny random-weight SD 1.5 exported in this run. Prompt, generate, lock the
///    seed, edit the prompt (which regenerates with that seed), compare; the first image must
///    equal, pixel for pixel, what `atelier generate` makes with the same parameters.
#[test]
fn generate_lock_seed_regenerate_compare_quit() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    common::export_tool(&[
        "import-sd",
        "--random-init",
        "tiny-sd15",
        "--models",
        models.to_str().unwrap(),
        "--name",
        "tiny",
        "--no-verify",
    ]);
    let out = tmp.path().join("out");
    let media = tmp.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    let config = tmp.path().join("config");
    write_config(
        &config,
        &format!(
            "[diffusion]\nmodel = \"tiny\"\nsteps = 3\nscheduler = \"euler\"\nguidance = 7.5\n\
             width = 64\nheight = 64\noutput-dir = \"{}\"\n",
            out.display()
        ),
    );
    let state = tmp.path().join("state");
    let t = Tmux::start(
        "atelier-e2e-generate",
        &[
            ("ATELIER_MODELS", &models),
            ("XDG_STATE_HOME", &state),
            ("ATELIER_CONFIG_DIR", &config),
            ("XDG_DATA_HOME", &tmp.path().join("data")),
        ],
        &[&media],
    );
    t.wait_for("the first frame", |s| s.contains("Generate"));
    t.wait_for("the memory figure in the status bar", |s| {
        s.contains(" CPU RSS ") && s.contains(" RAM ")
    });
    t.keys(&["4", "e"]);
    t.wait_for("the prompt editor", |s| s.contains(" prompt "));
    t.text("a red bicycle");
    t.keys(&["Enter", "r"]);
    let first = wait_for_pngs(&t, &out, 1).remove(0);
    let s = t.wait_for("the generation done in the history", |s| s.contains("#1 ✓"));
    assert!(
        s.contains("tiny"),
        "the loaded model in the status bar:\n{s}"
    );
    let seed = seed_of(&first);
    let text = atelier::output::png_meta::read_parameters(&first)
        .unwrap()
        .unwrap();
    assert!(text.starts_with("a red bicycle\n"), "{text}");
    assert!(text.contains(&format!("Seed: {seed},")), "{text}");
    assert!(
        text.contains("Steps: 3,") && text.contains("Size: 64x64"),
        "{text}"
    );
    t.screenshot("generate");

    // Lock the seed and edit the prompt: the edit alone regenerates, with the same seed.
    t.keys(&["s"]);
    t.wait_for("the lock", |s| s.contains("seed locked"));
    t.keys(&["e", "End"]);
    t.text(" at night");
    t.keys(&["Enter"]);
    let second = wait_for_pngs(&t, &out, 2).remove(1);
    assert_eq!(seed_of(&second), seed, "{}", second.display());
    let text2 = atelier::output::png_meta::read_parameters(&second)
        .unwrap()
        .unwrap();
    assert!(text2.starts_with("a red bicycle at night\n"), "{text2}");
    assert!(text2.contains(&format!("Seed: {seed},")), "{text2}");
    t.wait_for("the second generation done", |s| s.contains("#2 ✓"));

    // Compare the two side by side: both file names and both prompts on screen.
    t.keys(&["c"]);
    let names = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    let s = t.wait_for("the compare view", |s| {
        s.contains("compare (esc closes)")
            && s.contains(&names(&first))
            && s.contains(&names(&second))
    });
    assert!(s.contains("at night"), "{s}");
    t.screenshot("generate-compare");
    t.keys(&["Escape"]);
    t.wait_for("the compare view closed", |s| {
        !s.contains("compare (esc closes)")
    });
    t.quit_and_check_restored();

    // The same parameters through `atelier generate`: the same pixels.
    let cli_out = tmp.path().join("cli");
    let o = common::atelier()
        .env("ATELIER_MODELS", &models)
        .env("XDG_STATE_HOME", &state)
        .env("ATELIER_CONFIG_DIR", &config)
        .args([
            "generate", "--device", "cpu", "--model", "tiny", "--steps", "3",
        ])
        .args(["--scheduler", "euler", "--guidance", "7.5", "--width", "64"])
        .args(["--height", "64", "--seed", &seed.to_string(), "--out"])
        .arg(&cli_out)
        .arg("a red bicycle")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cli = pngs(&cli_out).remove(0);
    let a = image::open(&first).unwrap().to_rgb8();
    let b = image::open(&cli).unwrap().to_rgb8();
    assert_eq!(a.dimensions(), (64, 64));
    assert!(
        a == b,
        "the TUI and `atelier generate` made different pixels"
    );
}

fn atelier_cmd(env: &[(&str, &Path)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_atelier"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.env_remove("ATELIER_LOG");
    cmd
}

#[test]
fn the_tui_and_atelier_watch_share_one_queue() {
    let tmp = tempfile::tempdir().unwrap();
    let tmp_root = std::fs::canonicalize(tmp.path()).unwrap();
    let media = tmp_root.join("media");
    std::fs::create_dir_all(&media).unwrap();
    let clip = &common::librivox_clips()[0];
    std::fs::copy(clip, media.join("speech.wav")).unwrap();
    // The configured model is not installed: the TUI's job fails at once, naming it (and
    // no model has to run for this test).
    let config = tmp_root.join("config");
    write_config(&config, "[whisper]\nmodel = \"whisper-not-installed\"\n");
    let models = common::test_models();
    let state = tmp_root.join("state");
    let data = tmp_root.join("data");
    // No --queue anywhere: every process uses the default journal under XDG_DATA_HOME.
    let env: [(&str, &Path); 4] = [
        ("ATELIER_MODELS", &models),
        ("XDG_STATE_HOME", &state),
        ("ATELIER_CONFIG_DIR", &config),
        ("XDG_DATA_HOME", &data),
    ];
    let t = Tmux::start("atelier-e2e-one-queue", &env, &[&media]);
    let s = t.wait_for("the TUI's transcription to fail", |s| {
        s.contains("speech.wav") && s.contains(" failed")
    });
    assert!(
        s.contains("whisper-not-installed"),
        "the error names the model:\n{s}"
    );
    assert!(data.join("atelier/queue.sqlite").is_file());

    // The TUI's job, from the shell.
    let out = atelier_cmd(&env)
        .args(["queue", "list", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jobs: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let speech = media.join("speech.wav");
    let mine: Vec<&serde_json::Value> = jobs
        .iter()
        .filter(|j| j["input"] == speech.to_string_lossy().as_ref())
        .collect();
    assert_eq!(mine.len(), 1, "{jobs:#?}");
    assert_eq!(mine[0]["kind"], "transcribe");
    assert_eq!(mine[0]["state"], "failed");
    assert_eq!(
        mine[0]["priority"], 10,
        "interactive work goes ahead of batches"
    );
    assert!(
        mine[0]["error"]
            .as_str()
            .unwrap()
            .contains("whisper-not-installed"),
        "{:#}",
        mine[0]
    );

    // Jobs another process queues on the same journal show up in the TUI.
    let inbox = tmp_root.join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(inbox.join("ledger.bin"), b"some bytes to hash").unwrap();
    let out = atelier_cmd(&env)
        .args([
            "watch",
            "--kind",
            "checksum",
            "--stable-ms",
            "200",
            "--exit-when-idle",
        ])
        .arg(&inbox)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = t.wait_for("the watch's job in the queue pane", |s| {
        s.contains("ledger.bin") && s.contains("checksum done")
    });
    t.screenshot("one-queue");
    assert!(s.contains("speech.wav"), "{s}");
    assert!(inbox.join("ledger.sha256").is_file());
    t.quit_and_check_restored();
}

/// Two voices taking turns (a LibriVox reader and espeak-ng's en-gb+f4, as tests/diarize.rs
/// builds them), 0.7 s of silence between turns.
fn two_voice_conversation(dir: &Path) -> Vec<f32> {
    let clips = common::librivox_clips();
    let lines = [
        "The weather has been strange this week, with rain in the morning and sun by the afternoon.",
        "I think we should leave early tomorrow, before the roads get busy with traffic.",
    ];
    let espeak = |i: usize| {
        let path = dir.join(format!("espeak-{i}.wav"));
        let ok = Command::new("espeak-ng")
            .args(["-v", "en-gb+f4", "-s", "165", "-w"])
            .arg(&path)
            .arg(lines[i])
            .status()
            .expect("espeak-ng (apt install espeak-ng)")
            .success();
        assert!(ok);
        atelier::media::audio::decode_to_16k_mono(&path).unwrap()
    };
    let reader = |i: usize| atelier::media::audio::decode_to_16k_mono(&clips[i]).unwrap();
    let mut audio = Vec::new();
    for (i, part) in [reader(0), espeak(0), reader(1), espeak(1), reader(2)]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            audio.extend(std::iter::repeat_n(0.0f32, 11_200));
        }
        audio.extend(part);
    }
    audio
}

#[test]
fn diarize_rename_filter_speakers() {
    let tmp = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tmp.path()).unwrap();
    let media = root.join("media");
    std::fs::create_dir_all(&media).unwrap();
    common::write_wav(&media.join("talk.wav"), &two_voice_conversation(&root));
    let config = root.join("config");
    write_config(
        &config,
        "[whisper]\nmodel = \"whisper-tiny.en\"\nbeam-size = 1\n",
    );
    let models = common::test_models();
    assert!(
        models.join("speaker-resemblyzer/manifest.toml").is_file(),
        "{}: no speaker encoder: run tools/dev.sh test (it exports it)",
        models.display()
    );
    let t = Tmux::start(
        "atelier-e2e-speakers",
        &[
            ("ATELIER_MODELS", &models),
            ("XDG_STATE_HOME", &root.join("state")),
            ("ATELIER_CONFIG_DIR", &config),
            ("XDG_DATA_HOME", &root.join("data")),
        ],
        &[&media],
    );
    t.wait_for("the transcript to be made", |s| {
        s.contains("talk.wav · ") && s.contains(" done")
    });
    // D: transcribed again, diarized; the pane labels both speakers
    t.keys(&["2", "D"]);
    let s = t.wait_for("the diarized transcript", |s| {
        s.contains("2 speakers") && s.contains("SPEAKER_01") && s.contains(" done")
    });
    assert!(s.contains("SPEAKER_00"), "{s}");
    assert!(media.join("talk.rttm").is_file(), "the diarized job's RTTM");
    // S on the first segment: SPEAKER_00 becomes Alice in every output format
    t.keys(&["g", "S"]);
    t.wait_for("the rename prompt", |s| s.contains("rename speaker"));
    t.keys(&["End"]);
    for _ in 0.."SPEAKER_00".len() {
        t.keys(&["BSpace"]);
    }
    t.text("Alice");
    t.keys(&["Enter"]);
    t.wait_for("the files rewritten", |s| {
        s.contains("saved ") && s.contains("Alice") && !s.contains("SPEAKER_00")
    });
    t.screenshot("speakers");
    for ext in ["txt", "srt", "vtt", "tsv", "json", "rttm"] {
        let p = media.join(format!("talk.{ext}"));
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.contains("Alice") && !text.contains("SPEAKER_00"),
            "{} is not renamed:\n{text}",
            p.display()
        );
        assert!(
            text.contains("SPEAKER_01") || ext == "vtt",
            "{ext}:\n{text}"
        );
    }
    assert!(std::fs::read_to_string(media.join("talk.vtt"))
        .unwrap()
        .contains("<v Speaker 2>"));
    let names: Vec<String> = std::fs::read_dir(&media)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.contains(".1.") && !n.contains("tmp")),
        "rewritten in place, no temp files: {names:?}"
    );
    // f: only Alice's segments; again: all
    t.keys(&["f"]);
    t.wait_for("the filter", |s| {
        s.contains("only Alice") && !s.contains("SPEAKER_01")
    });
    t.keys(&["f"]);
    t.wait_for("every speaker again", |s| {
        s.contains("SPEAKER_01") && !s.contains("only Alice")
    });
    t.quit_and_check_restored();
}
