//! Claim latency at 100k queued jobs, on the SQLite journal and on a PostgreSQL queue.
//!
//! ```sh
//! cargo run --release --example claim_latency -- --sqlite /tmp/q.sqlite \
//!     --postgres postgres://postgres@%2Ftmp%2Fpg:5432/bench [--jobs 100000] [--claims 2000]
//! ```
//!
//! Each journal gets `--jobs` queued checksum jobs (priorities 0, 1, 2 in turn): the first
//! 1,000 through `JobStore::insert` (timed), the rest in one `INSERT … SELECT` with the same
//! columns. Then `--claims` claims one after the other (`JobStore::claim_next`, the call a
//! worker makes: the claim transaction and reading the job back). Prints the insert rate,
//! the claim latency percentiles and the claim query's plan. The journal must be new (a
//! missing file, an empty database).
use atelier::jobs::{JobKind, JobOptions, JobStore, NewJob, PgStore, Priority, SqliteStore};
use atelier::jobs::{QueueLocation, WorkerInfo};
use std::path::PathBuf;
use std::time::{Duration, Instant};

struct Args {
    sqlite: Option<PathBuf>,
    postgres: Option<String>,
    jobs: usize,
    claims: usize,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        sqlite: None,
        postgres: None,
        jobs: 100_000,
        claims: 2000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--sqlite" => args.sqlite = Some(value()?.into()),
            "--postgres" => args.postgres = Some(value()?),
            "--jobs" => args.jobs = value()?.parse().map_err(|e| format!("--jobs: {e}"))?,
            "--claims" => args.claims = value()?.parse().map_err(|e| format!("--claims: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.sqlite.is_none() && args.postgres.is_none() {
        return Err("give --sqlite FILE and/or --postgres URL".to_string());
    }
    Ok(args)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// How many of the jobs go in through `JobStore::insert` (timed); the rest in one
/// statement, with the same columns.
const ONE_BY_ONE: usize = 1000;

/// Fills `store` with `n` queued jobs, then times `claims` claims. `bulk` adds jobs
/// `from..n` in one statement.
fn measure(
    name: &str,
    store: &mut dyn JobStore,
    n: usize,
    claims: usize,
    bulk: &dyn Fn(usize, usize) -> Result<(), String>,
) -> Result<(), String> {
    if store.count_active().map_err(|e| e.to_string())? != 0 {
        return Err(format!(
            "{}: not empty; give a new journal",
            store.describe()
        ));
    }
    let start = Instant::now();
    let first = n.min(ONE_BY_ONE);
    for i in 0..first {
        store
            .insert(&NewJob {
                kind: JobKind::Checksum,
                input: PathBuf::from(format!("/bench/in/{i:06}.bin")),
                options: JobOptions::default(),
                priority: Priority((i % 3) as i32),
                max_attempts: 3,
                input_size: Some(i as u64),
                input_mtime_ns: Some(1),
            })
            .map_err(|e| e.to_string())?;
    }
    let one_by_one = start.elapsed();
    println!(
        "{name}: {first} jobs through JobStore::insert in {:.2} s ({:.0} inserts/s)",
        one_by_one.as_secs_f64(),
        first as f64 / one_by_one.as_secs_f64()
    );
    bulk(first, n)?;
    let queued = store.count_active().map_err(|e| e.to_string())?;
    if queued != n {
        return Err(format!("{name}: {queued} jobs queued, not {n}"));
    }
    let worker = WorkerInfo::this_process("cpu");
    let lease = Duration::from_secs(600);
    let mut times = Vec::with_capacity(claims);
    for _ in 0..claims {
        let t = Instant::now();
        let job = store
            .claim_next(&worker, lease)
            .map_err(|e| e.to_string())?;
        times.push(t.elapsed());
        if job.is_none() {
            return Err(format!("{name}: the queue ran dry"));
        }
    }
    times.sort();
    let mean = times.iter().sum::<Duration>().as_secs_f64() * 1e3 / times.len() as f64;
    println!(
        "{name}: {claims} claims at {n}..{} queued: mean {mean:.3} ms, p50 {:.3} ms, \
         p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        n - claims,
        percentile(&times, 0.5),
        percentile(&times, 0.9),
        percentile(&times, 0.99),
        percentile(&times, 1.0)
    );
    Ok(())
}

/// The claim's SELECT as the planner would run it without `INDEXED BY` (what the journal
/// did before), against the one it runs now, on the same full journal.
fn sqlite_plans(path: &PathBuf) -> Result<(), String> {
    let conn = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
    let now = atelier::jobs::now_ms();
    for (what, sql) in [
        (
            "planner's choice",
            "SELECT id FROM jobs WHERE state = 'queued' AND not_before <= ?1 \
             ORDER BY priority DESC, id LIMIT 1",
        ),
        (
            "INDEXED BY jobs_due (the claim)",
            "SELECT id FROM jobs INDEXED BY jobs_due WHERE state = 'queued' \
             AND not_before <= ?1 ORDER BY priority DESC, id LIMIT 1",
        ),
    ] {
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .and_then(|mut st| {
                st.query_map([now], |r| r.get::<_, String>(3))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(|e| e.to_string())?;
        let mut stmt = conn.prepare(sql).map_err(|e| e.to_string())?;
        let runs = 200;
        let t = Instant::now();
        for _ in 0..runs {
            let _: i64 = stmt
                .query_row([now], |r| r.get(0))
                .map_err(|e| e.to_string())?;
        }
        println!(
            "sqlite: the claim's SELECT alone, {what}: {:.3} ms  [{}]",
            t.elapsed().as_secs_f64() * 1e3 / runs as f64,
            plan.join("; ")
        );
    }
    Ok(())
}

fn postgres_plan(url: &str) -> Result<(), String> {
    let mut client = postgres::Client::connect(url, postgres::NoTls).map_err(|e| e.to_string())?;
    let rows = client
        .query(
            "EXPLAIN SELECT id FROM jobs WHERE state = 'queued' AND not_before <= \
             atelier_now_ms() ORDER BY priority DESC, id LIMIT 1 FOR UPDATE SKIP LOCKED",
            &[],
        )
        .map_err(|e| e.to_string())?;
    let plan: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    println!("postgres: claim plan:\n  {}", plan.join("\n  "));
    Ok(())
}

fn run() -> Result<(), String> {
    let args = parse()?;
    if let Some(path) = &args.sqlite {
        let mut store = SqliteStore::open(path).map_err(|e| e.to_string())?;
        let bulk = |from: usize, to: usize| {
            let conn = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
            conn.execute(
                "WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?2) \
                 INSERT INTO jobs (kind, input, options, state, priority, max_attempts, \
                 created_at, not_before, input_size, input_mtime_ns, updated_at) \
                 SELECT 'checksum', CAST(printf('/bench/in/%06d.bin', i) AS BLOB), '{}', \
                 'queued', i % 3, 3, ?3, 0, i, 1, ?3 FROM n",
                rusqlite::params![from as i64, to as i64, atelier::jobs::now_ms()],
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
        };
        measure("sqlite", &mut store, args.jobs, args.claims, &bulk)?;
        sqlite_plans(path)?;
    }
    if let Some(url) = &args.postgres {
        if QueueLocation::from_text(url).is_none() {
            return Err(format!("--postgres {url}: not a postgres:// URL"));
        }
        let mut store = PgStore::open(url).map_err(|e| e.to_string())?;
        let bulk = |from: usize, to: usize| {
            let mut client =
                postgres::Client::connect(url, postgres::NoTls).map_err(|e| e.to_string())?;
            client
                .execute(
                    "INSERT INTO jobs (kind, input, options, state, priority, max_attempts, \
                     created_at, not_before, input_size, input_mtime_ns, updated_at) \
                     SELECT 'checksum', convert_to(format('/bench/in/%s.bin', \
                     lpad(i::text, 6, '0')), 'UTF8'), '{}', 'queued', i % 3, 3, \
                     atelier_now_ms(), 0, i, 1, atelier_now_ms() \
                     FROM generate_series($1::bigint, $2::bigint - 1) AS i",
                    &[&(from as i64), &(to as i64)],
                )
                .map(|_| ())
                .map_err(|e| e.to_string())?;
            // What autovacuum would do soon after such a load anyway.
            client
                .batch_execute("ANALYZE jobs")
                .map_err(|e| e.to_string())
        };
        measure("postgres", &mut store, args.jobs, args.claims, &bulk)?;
        postgres_plan(url)?;
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
