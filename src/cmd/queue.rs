//! `atelier queue list | workers | retry | cancel | clear-done`: the job journal (SQLite, or
//! a shared PostgreSQL queue) from the shell.
//!
//! These change the journal only; a running `atelier watch` sees the change within its poll
//! interval (a cancelled running job stops at its next check).
use super::fail;
use crate::cli::QueueCommand;
use crate::config::Loaded;
use crate::jobs::{self, CancelOutcome, JobFilter, JobId, JobState, JobStore, QueueLocation};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

fn open(loaded: &Loaded, flag: Option<&Path>) -> Result<Box<dyn JobStore>, jobs::StoreError> {
    jobs::open_store(&QueueLocation::resolve(&loaded.config, flag))
}

/// A worker is live while its heartbeat is younger than this many leases.
const LIVE_LEASES: u32 = 2;

fn when(ms: Option<i64>) -> String {
    match ms {
        Some(ms) => {
            let secs = (jobs::now_ms() - ms).max(0) / 1000;
            match secs {
                0..60 => format!("{secs}s ago"),
                60..3600 => format!("{}m ago", secs / 60),
                3600..86400 => format!("{}h ago", secs / 3600),
                _ => format!("{}d ago", secs / 86400),
            }
        }
        None => "-".into(),
    }
}

pub fn run(loaded: &Loaded, command: QueueCommand) -> ExitCode {
    match command {
        QueueCommand::List {
            state,
            json,
            journal,
        } => {
            let mut states = Vec::new();
            for s in &state {
                match JobState::parse(s) {
                    Some(st) => states.push(st),
                    None => {
                        eprintln!(
                            "error: --state: unknown state '{s}': use queued, running, done, failed or cancelled"
                        );
                        return super::exit(super::EXIT_USAGE);
                    }
                }
            }
            let store = match open(loaded, journal.queue.as_deref()) {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            let jobs = match store.list(&JobFilter {
                states,
                ..JobFilter::default()
            }) {
                Ok(j) => j,
                Err(e) => return fail(e),
            };
            for job in jobs {
                if json {
                    match serde_json::to_string(&job) {
                        Ok(line) => println!("{line}"),
                        Err(e) => return fail(e),
                    }
                } else {
                    let extra = match (&job.error, job.state) {
                        (Some(e), _) => format!("  {e}"),
                        (None, JobState::Done) => format!("  {} output(s)", job.outputs.len()),
                        _ => String::new(),
                    };
                    let on = match (&job.host, &job.device) {
                        (Some(h), Some(d)) => format!("{h}/{d}"),
                        _ => "-".to_string(),
                    };
                    println!(
                        "{:>6}  {:<10} {:<9} try {}/{}  {:>8}  {:<16} {}{extra}",
                        job.id,
                        job.kind.name(),
                        job.state.name(),
                        job.attempts,
                        job.max_attempts,
                        when(job.finished_at.or(job.started_at).or(Some(job.created_at))),
                        on,
                        job.input.display()
                    );
                }
            }
            ExitCode::SUCCESS
        }
        QueueCommand::Retry {
            ids,
            failed,
            journal,
        } => {
            let mut store = match open(loaded, journal.queue.as_deref()) {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            let mut ids: Vec<JobId> = ids.into_iter().map(JobId).collect();
            if failed {
                let filter = JobFilter {
                    states: vec![JobState::Failed],
                    ..JobFilter::default()
                };
                match store.list(&filter) {
                    Ok(jobs) => ids.extend(jobs.iter().map(|j| j.id)),
                    Err(e) => return fail(e),
                }
            }
            let mut bad = 0;
            for id in ids {
                match store.retry(id, jobs::now_ms()) {
                    Ok(true) => println!("{id}: queued again"),
                    Ok(false) => {
                        eprintln!("error: job {id}: no such failed or cancelled job");
                        bad += 1;
                    }
                    Err(e) => return fail(e),
                }
            }
            finish(bad)
        }
        QueueCommand::Cancel { ids, journal } => {
            let mut store = match open(loaded, journal.queue.as_deref()) {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            let mut bad = 0;
            for id in ids.into_iter().map(JobId) {
                match store.cancel(id, jobs::now_ms()) {
                    Ok(CancelOutcome::Cancelled) => println!("{id}: cancelled"),
                    Ok(CancelOutcome::Requested) => {
                        println!("{id}: running; asked to stop")
                    }
                    Ok(CancelOutcome::Nothing) => {
                        eprintln!("error: job {id}: no such queued or running job");
                        bad += 1;
                    }
                    Err(e) => return fail(e),
                }
            }
            finish(bad)
        }
        QueueCommand::Workers { json, journal } => {
            let store = match open(loaded, journal.queue.as_deref()) {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            let lease = Duration::from_millis(loaded.config.queue.lease_ms.max(300));
            let workers = match store.workers(lease * LIVE_LEASES) {
                Ok(w) => w,
                Err(e) => return fail(e),
            };
            if !json && workers.is_empty() {
                println!("no live workers on {}", store.describe());
            }
            for w in workers {
                if json {
                    match serde_json::to_string(&w) {
                        Ok(line) => println!("{line}"),
                        Err(e) => return fail(e),
                    }
                } else {
                    println!(
                        "{:<24} {:<8} pid {:<8} {} job(s)  heartbeat {}  up since {}",
                        w.host,
                        w.device,
                        w.pid,
                        w.running,
                        when(Some(w.heartbeat_at)),
                        when(Some(w.started_at))
                    );
                }
            }
            ExitCode::SUCCESS
        }
        QueueCommand::ClearDone { all, journal } => {
            let mut store = match open(loaded, journal.queue.as_deref()) {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            match store.clear_finished(all) {
                Ok(n) => {
                    println!("{n} job(s) removed from the journal");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}

fn finish(bad: usize) -> ExitCode {
    if bad > 0 {
        super::exit(super::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    }
}
