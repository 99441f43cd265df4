//! Helpers for the `atelier watch` / `atelier queue` tests: a private state, data and
//! config folder per test, the journal as JSON, events as JSON lines.
#![allow(dead_code)]
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A test's private home: config, state (logs) and data folders, and its journal.
pub struct Home {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Home {
    pub fn new() -> Home {
        let dir = tempfile::tempdir().unwrap();
        // Canonical, as the watcher records inputs.
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(root.join("config")).unwrap();
        Home { _dir: dir, root }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn journal(&self) -> PathBuf {
        self.path().join("queue.sqlite")
    }

    /// Writes the user config (merged over the presets).
    pub fn config(&self, text: &str) {
        std::fs::write(self.path().join("config/config.toml"), text).unwrap();
    }

    /// `atelier` with this home and the test models.
    pub fn atelier(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_atelier"));
        cmd.env("XDG_STATE_HOME", self.path().join("state"))
            .env("XDG_DATA_HOME", self.path().join("data"))
            .env("ATELIER_CONFIG_DIR", self.path().join("config"))
            .env_remove("ATELIER_LOG");
        if let Some(models) = std::env::var_os("ATELIER_TEST_MODELS") {
            cmd.env("ATELIER_MODELS", models);
        } else {
            cmd.env(
                "ATELIER_MODELS",
                Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/models"),
            );
        }
        cmd
    }

    /// `atelier watch ARGS… --queue JOURNAL`, stdout piped (JSON lines: not a terminal).
    pub fn watch(&self, args: &[&str]) -> Command {
        let mut cmd = self.atelier();
        cmd.arg("watch")
            .args(args)
            .arg("--queue")
            .arg(self.journal())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs `watch ARGS… --exit-when-idle` to the end; its exit success and events.
    pub fn watch_until_idle(&self, args: &[&str]) -> (bool, Vec<Value>, String) {
        self.watch_until_idle_under(&[], args)
    }

    /// As [`Home::watch_until_idle`], with `atelier` run under `prefix` (e.g. `setpriv …`;
    /// empty: directly).
    pub fn watch_until_idle_under(
        &self,
        prefix: &[&str],
        args: &[&str],
    ) -> (bool, Vec<Value>, String) {
        let mut cmd = self.watch(args);
        cmd.arg("--exit-when-idle");
        if let Some((program, rest)) = prefix.split_first() {
            let inner = cmd;
            cmd = Command::new(program);
            cmd.args(rest)
                .arg(inner.get_program())
                .args(inner.get_args());
            for (k, v) in inner.get_envs() {
                match v {
                    Some(v) => cmd.env(k, v),
                    None => cmd.env_remove(k),
                };
            }
        }
        let out = cmd.output().unwrap();
        let events = parse_events(&String::from_utf8_lossy(&out.stdout));
        (
            out.status.success(),
            events,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn spawn_watch(&self, args: &[&str]) -> Child {
        self.watch(args).spawn().unwrap()
    }

    /// Every job in the journal, via `atelier queue list --json`.
    pub fn jobs(&self) -> Vec<Value> {
        let out = self
            .atelier()
            .args(["queue", "list", "--json", "--queue"])
            .arg(self.journal())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        parse_events(&String::from_utf8_lossy(&out.stdout))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path().join("state/atelier/atelier.log")).unwrap_or_default()
    }
}

pub fn parse_events(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

pub fn count(events: &[Value], name: &str) -> usize {
    events.iter().filter(|e| e["event"] == name).count()
}

/// Jobs of the journal whose input is `path`.
pub fn jobs_of<'a>(jobs: &'a [Value], path: &Path) -> Vec<&'a Value> {
    let p = path.to_string_lossy();
    jobs.iter().filter(|j| j["input"] == *p).collect()
}

/// The one job of `input` in `jobs`: asserts it is the only one, done, and that its recorded
/// outputs are exactly `INPUT.FORMAT` for each of `formats`.
pub fn the_done_job<'a>(jobs: &'a [Value], input: &Path, formats: &[&str]) -> &'a Value {
    let mine = jobs_of(jobs, input);
    assert_eq!(mine.len(), 1, "{}: {mine:#?}", input.display());
    let job = mine[0];
    assert_eq!(job["state"], "done", "{job:#}");
    let mut recorded: Vec<String> = job["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap().to_string())
        .collect();
    recorded.sort();
    let mut wanted: Vec<String> = formats
        .iter()
        .map(|f| input.with_extension(f).to_string_lossy().into_owned())
        .collect();
    wanted.sort();
    assert_eq!(
        recorded, wanted,
        "the journal agrees with the disk: {job:#}"
    );
    job
}

/// Every file under `dir`, sorted.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Atelier's temp files left anywhere under `dir`.
pub fn temp_files(dir: &Path) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.contains(".atelier-job") && n.ends_with(".tmp")
        })
        .collect()
}

/// coreutils' sha256sum of a file: the reference for the checksum kind.
pub fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The hash recorded in a `.sha256` output.
pub fn recorded_hash(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Reads the child's stdout JSON lines on a thread.
pub fn event_stream(child: &mut Child) -> std::sync::mpsc::Receiver<Value> {
    use std::io::BufRead;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if tx.send(v).is_err() {
                    break;
                }
            }
        }
    });
    rx
}

/// Events until `n` jobs finished (done, or failed for good); panics after 10 minutes idle.
pub fn until_finished(rx: &std::sync::mpsc::Receiver<Value>, n: usize, seen: &mut Vec<Value>) {
    let finished = |seen: &[Value]| {
        seen.iter()
            .filter(|e| e["event"] == "done" || (e["event"] == "failed" && e["retry_at"].is_null()))
            .count()
    };
    while finished(seen) < n {
        match rx.recv_timeout(std::time::Duration::from_secs(600)) {
            Ok(e) => seen.push(e),
            Err(_) => panic!("stopped after {} finished jobs of {n}", finished(seen)),
        }
    }
}

/// SIGTERM, then wait; true when it exited 0.
pub fn terminate(child: &mut Child) -> bool {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    child.wait().unwrap().success()
}

/// The peak resident memory (VmHWM, kB) of a running process.
pub fn vm_hwm_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The LibriVox clips (pocketsphinx-testdata), sorted by name.
pub fn librivox_wavs() -> Vec<PathBuf> {
    let dir = Path::new("/usr/share/pocketsphinx/test/data/librivox");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e} (apt install pocketsphinx-testdata)", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .collect();
    paths.sort();
    paths
}

/// `paths` decoded to 16 kHz mono samples.
pub fn decode_all(paths: &[PathBuf]) -> Vec<Vec<f32>> {
    paths
        .iter()
        .map(|p| atelier::media::audio::decode_to_16k_mono(p).unwrap())
        .collect()
}
