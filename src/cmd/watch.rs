//! `atelier watch [DIR…]`: the headless watch-folder daemon (SSH, systemd).
//!
//! Config profiles or ad-hoc folders become watch rules; files become jobs in the journal;
//! one JSON line per job event goes to stdout when it is not a terminal (a readable line
//! when it is). SIGINT/SIGTERM stop cleanly: a running job is cancelled and queued again.
use super::{fail, usage};
use crate::cli::{JobKindArg, OnDoneArg, PollArg, WatchArgs};
use crate::config::{DeviceChoice, Loaded, WatchProfile};
use crate::engine::{runtime, DeviceThread};
use crate::jobs::{
    expand_home, open_store, runners, take_back_orphans, JobEvent, JobId, JobKind, JobOptions,
    OnDone, Priority, Queue, QueueLocation, QueueSettings, Runners,
};
use crate::watch::{self, PollMode, Rule, RuleSpec, WatchSettings};
use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALLED.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn kind_of(arg: JobKindArg) -> JobKind {
    match arg {
        JobKindArg::Transcribe => JobKind::Transcribe,
        JobKindArg::Tag => JobKind::Tag,
        JobKindArg::Index => JobKind::Index,
        JobKindArg::Generate => JobKind::Generate,
        JobKindArg::Checksum => JobKind::Checksum,
    }
}

/// How `atelier queue list` and `workers` name a device.
fn device_name(device: tch::Device) -> String {
    match device {
        tch::Device::Cpu => "cpu".to_string(),
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// A rule spec and its journal, from `atelier watch DIR` and its flags.
fn adhoc_specs(loaded: &Loaded, args: &WatchArgs) -> Vec<(RuleSpec, QueueLocation)> {
    let journal = QueueLocation::resolve(&loaded.config, args.queue.as_deref());
    args.dirs
        .iter()
        .map(|dir| {
            let spec = RuleSpec {
                name: dir.display().to_string(),
                root: dir.clone(),
                kind: Some(kind_of(args.kind)),
                options: JobOptions {
                    model: args.model.clone(),
                    language: args.language.clone(),
                    formats: args.output_format.clone(),
                    vad: args.no_vad.then_some(false),
                    diarize: args.diarize.then_some(true),
                    speakers: args.speakers,
                    min_speakers: args.min_speakers,
                    max_speakers: args.max_speakers,
                    labels: args.labels.clone(),
                    output_dir: args.output_dir.clone(),
                    on_done: match args.on_done {
                        OnDoneArg::Keep => OnDone::Keep,
                        OnDoneArg::Move => OnDone::Move,
                    },
                    done_dir: args.done_dir.clone(),
                    ..JobOptions::default()
                },
                priority: Priority(args.priority),
                include: args.include.clone(),
                exclude: args.exclude.clone(),
                poll: match args.poll {
                    PollArg::Auto => PollMode::Auto,
                    PollArg::Always => PollMode::Always,
                    PollArg::Never => PollMode::Never,
                },
                marker: args.marker.clone(),
            };
            (spec, journal.clone())
        })
        .collect()
}

/// `--diarize` and its speaker counts (the profile keys are checked when config loads).
fn adhoc_diarize_check(args: &WatchArgs) -> Result<(), String> {
    if args.diarize && args.no_vad {
        return Err("--diarize needs the VAD's speech ranges: drop --no-vad".into());
    }
    if args.diarize && args.kind != JobKindArg::Transcribe {
        return Err("--diarize is for --kind transcribe".into());
    }
    crate::config::check_speakers(args.speakers, args.min_speakers, args.max_speakers, "--")
}

/// A rule spec and its journal from a `[[watch]]` profile (validated when config loaded).
fn profile_spec(loaded: &Loaded, args: &WatchArgs, p: &WatchProfile) -> (RuleSpec, QueueLocation) {
    let path = |s: &str| non_empty(s).map(|s| expand_home(&s));
    let journal = match QueueLocation::from_text(&p.queue) {
        Some(url) if args.queue.is_none() => url,
        _ => match path(&p.queue) {
            Some(q) if args.queue.is_none() => QueueLocation::Sqlite(q),
            _ => QueueLocation::resolve(&loaded.config, args.queue.as_deref()),
        },
    };
    let spec = RuleSpec {
        name: non_empty(&p.name).unwrap_or_else(|| p.path.clone()),
        root: expand_home(&p.path),
        kind: JobKind::parse(&p.kind),
        options: JobOptions {
            model: non_empty(&p.model),
            language: non_empty(&p.language),
            formats: p.formats.clone(),
            vad: p.vad,
            diarize: p.diarize.then_some(true),
            speakers: p.speakers,
            min_speakers: p.min_speakers,
            max_speakers: p.max_speakers,
            labels: non_empty(&p.labels),
            top_k: p.top_k,
            index: path(&p.index),
            output_dir: path(&p.output_dir),
            on_done: if p.on_done == "move" {
                OnDone::Move
            } else {
                OnDone::Keep
            },
            done_dir: path(&p.done_dir),
            ..JobOptions::default()
        },
        priority: Priority(p.priority),
        include: p.include.clone(),
        exclude: p.exclude.clone(),
        poll: PollMode::parse(&p.poll).unwrap_or_default(),
        marker: non_empty(&p.marker),
    };
    (spec, journal)
}

/// The runners of the kinds in use, each model a rule names (`--model`, a profile's
/// `model =`, else the config's) loaded now, so a missing one fails at start.
fn runners_for(
    loaded: &Loaded,
    rules: &[&Rule],
    thread: &DeviceThread,
    models_dir: &Path,
) -> Result<Runners, String> {
    let mut kinds: Vec<JobKind> = rules.iter().map(|r| r.kind).collect();
    kinds.sort_by_key(|k| k.name());
    kinds.dedup();
    // Jobs of other kinds in a shared journal are left to the process that runs them.
    let diarize = rules.iter().any(|r| r.options.diarize == Some(true));
    let runners = runners::build_diarizing(&loaded.config, &kinds, thread, models_dir, diarize)
        .own_kinds_only();
    let mut loaded_models: Vec<(JobKind, Option<&str>)> = Vec::new();
    for rule in rules {
        let want = (rule.kind, rule.options.model.as_deref());
        if loaded_models.contains(&want) {
            continue;
        }
        if let Some(runner) = runners.get(rule.kind) {
            runner
                .preload(want.1)
                .map_err(|e| format!("{}: {e}", rule.kind))?;
        }
        loaded_models.push(want);
    }
    Ok(runners)
}

/// Prints events: JSON lines for programs, readable lines for people.
struct Printer {
    json: bool,
    inputs: HashMap<JobId, PathBuf>,
    failed: usize,
}

impl Printer {
    fn print(&mut self, event: &JobEvent) {
        if let JobEvent::Queued { id, input, .. } = event {
            self.inputs.insert(*id, input.clone());
        }
        if let JobEvent::Failed { retry_at: None, .. } = event {
            self.failed += 1;
        }
        let mut out = std::io::stdout().lock();
        if self.json {
            if let Ok(line) = serde_json::to_string(event) {
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            return;
        }
        let id = event.id();
        let name = self
            .inputs
            .get(&id)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| format!("job {id}"));
        let line = match event {
            JobEvent::Queued { .. } => format!("queued   {name}"),
            JobEvent::Started { attempt, .. } => format!("started  {name} (try {attempt})"),
            JobEvent::Done { outputs, .. } => {
                format!("done     {name} ({} outputs)", outputs.len())
            }
            JobEvent::Failed {
                error,
                retry_at: Some(_),
                ..
            } => format!("retrying {name}: {error}"),
            JobEvent::Failed { error, .. } => format!("FAILED   {error}"),
            JobEvent::Cancelled { .. } => format!("cancelled {name}"),
            JobEvent::Requeued { .. } => format!("requeued {name}"),
            JobEvent::Progress { .. } | JobEvent::Partial { .. } => return,
        };
        let _ = writeln!(out, "{line}");
    }
}

pub fn run(loaded: &Loaded, args: WatchArgs, device: DeviceChoice, models_dir: &Path) -> ExitCode {
    // First, so a stop request during model loading is honoured, not fatal.
    install_signal_handlers();
    let specs = if !args.dirs.is_empty() {
        if let Err(e) = adhoc_diarize_check(&args) {
            return usage(e);
        }
        adhoc_specs(loaded, &args)
    } else {
        let profiles: Vec<&WatchProfile> = loaded
            .config
            .watch
            .iter()
            .filter(|p| args.profile.is_empty() || args.profile.contains(&p.name))
            .collect();
        for name in &args.profile {
            if !loaded.config.watch.iter().any(|p| &p.name == name) {
                return usage(format!("--profile: no [[watch]] profile named '{name}'"));
            }
        }
        profiles
            .into_iter()
            .map(|p| profile_spec(loaded, &args, p))
            .collect()
    };
    if specs.is_empty() {
        return usage("nothing to watch: give folders (atelier watch DIR…) or add [[watch]] profiles to config.toml");
    }
    let mut groups: BTreeMap<QueueLocation, Vec<Rule>> = BTreeMap::new();
    for (spec, journal) in specs {
        match Rule::new(spec) {
            Ok(rule) => groups.entry(journal).or_default().push(rule),
            Err(e) => return fail(e),
        }
    }
    let device = match runtime::resolve_device(device) {
        Ok(d) => d,
        Err(e) => return usage(e),
    };
    // The journals first, with what crashed processes left running taken back: a stop
    // during model loading (below) must not leave their jobs to the lease.
    let qcfg = &loaded.config.queue;
    let defaults = QueueSettings::from_config(qcfg, device.is_cuda());
    let mut stores = Vec::new();
    for (journal, rules) in groups {
        let mut store = match open_store(&journal) {
            Ok(s) => s,
            Err(e) => return fail(e),
        };
        if let Err(e) = take_back_orphans(store.as_mut(), defaults.max_crashes) {
            return fail(e);
        }
        stores.push((journal, rules, store));
    }
    let thread = match DeviceThread::spawn(device) {
        Ok(t) => t,
        Err(e) => return fail(format!("cannot start the model thread: {e}")),
    };
    let all_rules: Vec<&Rule> = stores.iter().flat_map(|(_, rules, _)| rules).collect();
    let runners = match runners_for(loaded, &all_rules, &thread, models_dir) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    if SIGNALLED.load(Ordering::SeqCst) {
        return ExitCode::SUCCESS;
    }
    let settings = QueueSettings {
        workers: args.workers.unwrap_or(defaults.workers),
        max_attempts: args
            .max_attempts
            .map_or(defaults.max_attempts, |n| n.max(1)),
        retry_backoff: args
            .retry_backoff_ms
            .map_or(defaults.retry_backoff, Duration::from_millis),
        device: device_name(device),
        ..defaults
    };
    let watch_settings = WatchSettings {
        stable: Duration::from_millis(args.stable_ms.unwrap_or(qcfg.stable_ms)),
        poll_interval: Duration::from_millis(qcfg.poll_interval_ms.max(100)),
    };
    let mut printer = Printer {
        json: args.json || !std::io::stdout().is_terminal(),
        inputs: HashMap::new(),
        failed: 0,
    };
    let mut running: Vec<(Queue, watch::WatchHandle, mpsc::Receiver<JobEvent>)> = Vec::new();
    for (journal, rules, store) in stores {
        tracing::info!("journal {}", journal.describe());
        let queue = match Queue::open(store, runners.clone(), settings.clone()) {
            Ok(q) => q,
            Err(e) => return fail(e),
        };
        let events = queue.subscribe();
        let handle = match watch::start(rules, queue.clone(), watch_settings.clone()) {
            Ok(h) => h,
            Err(e) => {
                queue.shutdown();
                return fail(e);
            }
        };
        running.push((queue, handle, events));
    }
    let mut last_idle_check = Instant::now();
    loop {
        let mut any = false;
        for (_, _, events) in &running {
            while let Ok(e) = events.try_recv() {
                // Partial output is transcript text: never copied into the log at info.
                match &e {
                    JobEvent::Partial { id, .. } => tracing::trace!("job {id}: partial output"),
                    _ => tracing::info!("{}", serde_json::to_string(&e).unwrap_or_default()),
                }
                printer.print(&e);
                any = true;
            }
        }
        if SIGNALLED.load(Ordering::SeqCst) {
            tracing::info!("signal: stopping; a running job is queued again");
            break;
        }
        if args.exit_when_idle && !any && last_idle_check.elapsed() > Duration::from_millis(300) {
            last_idle_check = Instant::now();
            let idle = running
                .iter()
                .all(|(q, w, _)| w.is_idle() && q.pending().is_ok_and(|n| n == 0));
            if idle {
                break;
            }
        }
        if !any {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    for (queue, mut handle, events) in running {
        handle.stop();
        queue.shutdown();
        while let Ok(e) = events.try_recv() {
            printer.print(&e);
        }
    }
    // A daemon stopped by a signal exits 0 (systemd counts anything else as a failure; the
    // journal keeps the failed jobs); `--exit-when-idle` reports them with exit 1.
    if printer.failed > 0 && !SIGNALLED.load(Ordering::SeqCst) {
        super::exit(super::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    }
}
