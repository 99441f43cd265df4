//! Every `--json` output parses and has the fields docs/json.md documents, of their types
//! (the tables there are the schema; tests/common/json_schema.rs reads them): doctor,
//! models list/info/verify, transcribe (a broken file among good ones), watch's events,
//! queue list and queue workers. CLIP's and SD's are checked in clip_model.rs and sd_cli.rs.
mod common;
use common::json_schema::{self, check_event, check_lines};
use common::{atelier_with_models, librivox_clips};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn run(cmd: &mut Command) -> std::process::Output {
    cmd.output().expect("run atelier")
}

#[test]
fn the_checker_finds_a_missing_field_and_a_wrong_type() {
    // The checker itself: an object missing a documented field, or with a wrong type, fails.
    let fields = json_schema::fields("models verify");
    let good = json!({"name": "m", "ok": true, "files": 3, "problems": []});
    assert!(json_schema::problems(&good, &fields).is_empty());
    let missing = json!({"name": "m", "ok": true, "problems": []});
    assert_eq!(json_schema::problems(&missing, &fields), ["files: missing"]);
    let wrong = json!({"name": 7, "ok": "yes", "files": 1.5, "problems": []});
    assert_eq!(json_schema::problems(&wrong, &fields).len(), 3);
    let null_name = json!({"name": null, "ok": false, "files": 0, "problems": ["x"]});
    assert!(json_schema::problems(&null_name, &fields).is_empty());
    // Nested array paths.
    let info = json_schema::fields("models info");
    assert!(info.contains_key("files[].sha256"), "{info:?}");
    let events = json_schema::event_fields("watch");
    assert_eq!(events["failed"]["retry_at"], ["integer", "null"]);
    assert_eq!(events["done"]["outputs"], ["array"]);
}

#[test]
fn doctor_and_models_print_their_documented_fields() {
    let state = tempfile::tempdir().unwrap();
    let out = run(atelier_with_models(state.path()).args(["doctor", "--json"]));
    let doctor = check_lines("doctor", &out.stdout);
    assert_eq!(doctor.len(), 1, "one object");
    let installed = doctor[0]["models"]["installed"].as_array().unwrap();
    assert!(
        installed
            .iter()
            .any(|m| m["name"] == "whisper-tiny.en" && m["ok"] == true),
        "{installed:#?}"
    );

    let out = run(atelier_with_models(state.path()).args(["models", "list", "--json"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = check_lines("models list", &out.stdout);
    assert!(list.iter().any(|m| m["name"] == "whisper-tiny.en"));

    let out = run(atelier_with_models(state.path()).args(["models", "info", "tiny.en", "--json"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = check_lines("models info", &out.stdout);
    assert_eq!(info[0]["name"], "whisper-tiny.en");
    assert!(!info[0]["files"].as_array().unwrap().is_empty());

    let out = run(atelier_with_models(state.path()).args([
        "models",
        "verify",
        "whisper-tiny.en",
        "--json",
    ]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verified = check_lines("models verify", &out.stdout);
    assert_eq!(verified.len(), 1);
    assert_eq!(verified[0]["ok"], true);
}

#[test]
fn transcribe_prints_one_line_per_good_file_and_names_the_broken_one() {
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let clips = librivox_clips();
    let broken = dir.path().join("broken.wav");
    // A RIFF header that claims 4 GB of 48 kHz stereo, then nothing.
    let mut bytes = b"RIFF\xff\xff\xff\xffWAVEfmt ".to_vec();
    bytes.extend_from_slice(&[16, 0, 0, 0, 1, 0, 2, 0, 0x80, 0xbb, 0, 0]);
    bytes.extend_from_slice(&[0, 0xee, 2, 0, 4, 0, 16, 0]);
    bytes.extend_from_slice(b"data\xff\xff\xff\xff");
    std::fs::write(&broken, &bytes).unwrap();
    let out = run(atelier_with_models(state.path())
        .args(["transcribe", "--model", "tiny.en", "--json", "-o"])
        .arg(dir.path())
        .arg(&clips[0])
        .arg(&broken)
        .arg(&clips[1]));
    assert_eq!(out.status.code(), Some(1), "a file failed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.wav"), "{stderr}");
    let lines = check_lines("transcribe", &out.stdout);
    let inputs: Vec<&Value> = lines.iter().map(|l| &l["input"]).collect();
    assert_eq!(
        inputs,
        [
            &json!(clips[0].to_string_lossy()),
            &json!(clips[1].to_string_lossy())
        ]
    );
    // The line is the JSON file's content with the input first.
    let stem = clips[0].file_stem().unwrap().to_string_lossy().into_owned();
    let written: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(format!("{stem}.json"))).unwrap())
            .unwrap();
    let mut line = lines[0].clone();
    line.as_object_mut().unwrap().remove("input");
    assert_eq!(line, written);
    let first_key = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap()
        .starts_with("{\"input\":");
    assert!(first_key, "the input leads each line");
}

/// `atelier watch DIR --json` in a private home, stdout and stderr drained.
struct Watch {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    stderr: std::thread::JoinHandle<String>,
}

fn spawn_watch(home: &Path, inbox: &Path) -> Watch {
    let mut child = atelier_with_models(home)
        .env("XDG_DATA_HOME", home.join("data"))
        .args(["watch", "--json", "--kind", "transcribe", "-f", "txt,json"])
        .arg("--stable-ms")
        .arg("200")
        .arg("--queue")
        .arg(home.join("queue.sqlite"))
        .arg(inbox)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut err = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    Watch {
        child,
        lines,
        stderr,
    }
}

#[test]
fn watch_events_queue_list_and_workers_have_their_documented_fields() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    std::fs::create_dir_all(home.join("config")).unwrap();
    let inbox = home.join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    std::fs::copy(&librivox_clips()[2], inbox.join("speech.wav")).unwrap();
    std::fs::write(inbox.join("noise.wav"), b"RIFF\x10\0\0\0WAVEjunkjunk").unwrap();
    let mut watch = spawn_watch(home, &inbox);
    let mut events: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    let finished = |events: &[Value]| {
        events
            .iter()
            .filter(|e| e["event"] == "done" || (e["event"] == "failed" && e["retry_at"].is_null()))
            .count()
    };
    while finished(&events) < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match watch.lines.recv_timeout(left) {
            Ok(line) => {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                check_event(&v);
                events.push(v);
            }
            Err(e) => {
                let _ = watch.child.kill();
                panic!("{e}: events so far {events:#?}");
            }
        }
    }
    // The daemon is alive: it lists itself as a worker.
    let out = run(atelier_with_models(home)
        .args(["queue", "workers", "--json", "--queue"])
        .arg(home.join("queue.sqlite")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let workers = check_lines("queue workers", &out.stdout);
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0]["pid"], watch.child.id());

    // SIGTERM: a clean stop, exit 0.
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(watch.child.id() as i32, libc::SIGTERM);
    }
    let status = watch.child.wait().unwrap();
    let log = watch.stderr.join().unwrap();
    assert!(status.success(), "a SIGTERM stop exits 0: {log}");
    while let Ok(line) = watch.lines.recv_timeout(Duration::from_secs(5)) {
        let v: Value = serde_json::from_str(&line).unwrap();
        check_event(&v);
        events.push(v);
    }
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for want in ["queued", "started", "done", "failed"] {
        assert!(kinds.contains(&want), "no {want} event: {kinds:?}");
    }
    let failed = events.iter().find(|e| e["event"] == "failed").unwrap();
    assert!(
        failed["error"].as_str().unwrap().contains("noise.wav"),
        "{failed}"
    );

    let out = run(atelier_with_models(home)
        .args(["queue", "list", "--json", "--queue"])
        .arg(home.join("queue.sqlite")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jobs = check_lines("queue list", &out.stdout);
    let mut states: Vec<&str> = jobs.iter().map(|j| j["state"].as_str().unwrap()).collect();
    states.sort();
    assert_eq!(states, ["done", "failed"]);
}
