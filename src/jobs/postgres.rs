//! The PostgreSQL queue: one shared queue for many processes on many servers. Claims take
//! `FOR UPDATE SKIP LOCKED`, so workers never wait on each other's rows; leases run on the
//! server's clock (`atelier_now_ms()`), so the servers' clocks need not agree. Paths are
//! stored as raw bytes (`bytea`) so non-UTF-8 names survive, as in the SQLite journal.
use super::store::{
    decode_row, orphaned, CancelOutcome, JobStore, NewJob, Orphaned, StoreError, WorkerInfo,
    WorkerRow,
};
use super::{Job, JobFilter, JobId, JobKind, JobOptions, JobState, Priority};
use postgres::types::ToSql;
use postgres::{Client, NoTls, Row};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// The schema version this build writes (table `atelier_schema`).
pub const PG_SCHEMA_VERSION: i32 = 1;

/// Version 1: jobs (with leases, the de-duplication key and `updated_at` kept by a
/// trigger), outputs, workers, and the server-clock function every lease uses.
const V1: &str = "
CREATE FUNCTION atelier_now_ms() RETURNS bigint LANGUAGE sql VOLATILE AS
    $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;
CREATE TABLE jobs (
    id bigserial PRIMARY KEY,
    kind text NOT NULL,
    input bytea NOT NULL,
    options text NOT NULL,
    state text NOT NULL,
    priority integer NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL,
    error text,
    created_at bigint NOT NULL,
    started_at bigint,
    finished_at bigint,
    not_before bigint NOT NULL DEFAULT 0,
    input_size bigint,
    input_mtime_ns bigint,
    cancel_requested boolean NOT NULL DEFAULT false,
    owner integer,
    crashes integer NOT NULL DEFAULT 0,
    claim text,
    lease_until bigint,
    host text,
    device text,
    worker text,
    dedup text UNIQUE,
    updated_at bigint NOT NULL DEFAULT 0
);
CREATE INDEX jobs_due ON jobs (state, priority DESC, id);
CREATE INDEX jobs_input ON jobs (input, kind);
CREATE INDEX jobs_lease ON jobs (state, lease_until);
CREATE INDEX jobs_not_before ON jobs (state, not_before);
CREATE INDEX jobs_updated ON jobs (updated_at);
CREATE FUNCTION atelier_touch() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN NEW.updated_at := atelier_now_ms(); RETURN NEW; END $$;
CREATE TRIGGER jobs_touched BEFORE UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION atelier_touch();
CREATE TABLE outputs (
    job_id bigint NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    path bytea NOT NULL,
    seq bigserial,
    PRIMARY KEY (job_id, path)
);
CREATE INDEX outputs_path ON outputs (path);
CREATE TABLE workers (
    id text PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    device text NOT NULL,
    started_at bigint NOT NULL,
    heartbeat_at bigint NOT NULL,
    running integer NOT NULL DEFAULT 0
);
CREATE INDEX workers_heartbeat ON workers (heartbeat_at);
";

/// The versioned migrations, in order (the same design as the SQLite journal's).
const MIGRATIONS: &[(i32, &str)] = &[(1, V1)];

/// Serialises migrations of one database (`pg_advisory_xact_lock`): "atelier" in ASCII.
const MIGRATION_LOCK: i64 = 0x0061_7465_6c69_6572;

const COLUMNS: &str = "id, kind, input, options, state, priority, attempts, max_attempts, error, \
     created_at, started_at, finished_at, not_before, input_size, input_mtime_ns, crashes, \
     host, device, worker, claim, lease_until, updated_at, cancel_requested";

/// The libpq keywords a `key=value` connection string may start with.
const KEYWORDS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "connect_timeout",
    "sslmode",
    "options",
];

/// Whether `s` names a PostgreSQL queue rather than a journal file: a `postgres://` or
/// `postgresql://` URL, or a libpq `key=value` string (`host=/run/postgresql dbname=q`).
pub fn is_url(s: &str) -> bool {
    let s = s.trim_start();
    if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        return true;
    }
    s.split_once('=')
        .is_some_and(|(key, _)| KEYWORDS.contains(&key.trim_end()))
}

/// `url` without its password, for messages.
pub fn redact(url: &str) -> String {
    let Ok(config) = url.parse::<postgres::Config>() else {
        return "postgres://(unparsable URL)".to_string();
    };
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            postgres::config::Host::Tcp(h) => h.clone(),
            postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_default();
    let port = config
        .get_ports()
        .first()
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    format!(
        "postgres://{}@{host}{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}

pub struct PgStore {
    client: Mutex<Client>,
    url: String,
    shown: String,
}

fn message(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text += &format!(": {s}");
        source = s.source();
    }
    text
}

fn path_bytes(p: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes().to_vec()
}

fn bytes_path(b: Vec<u8>) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(b))
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// Kind names come from the fixed table, never from input.
fn kinds_sql(kinds: &[JobKind]) -> String {
    let names: Vec<String> = kinds.iter().map(|k| format!("'{}'", k.name())).collect();
    names.join(",")
}

impl PgStore {
    /// Connects to `url` and brings its schema up to [`PG_SCHEMA_VERSION`].
    pub fn open(url: &str) -> Result<PgStore, StoreError> {
        let shown = redact(url);
        let mut client = Client::connect(url, NoTls).map_err(|e| StoreError::Postgres {
            url: shown.clone(),
            message: format!("cannot connect: {}", message(&e)),
        })?;
        migrate(&mut client, &shown)?;
        Ok(PgStore {
            client: Mutex::new(client),
            url: url.to_string(),
            shown,
        })
    }

    fn err(&self, e: postgres::Error) -> StoreError {
        StoreError::Postgres {
            url: self.shown.clone(),
            message: message(&e),
        }
    }

    /// The connection, made again if the server dropped it (a restart, a failover).
    fn client(&self) -> Result<MutexGuard<'_, Client>, StoreError> {
        let mut client = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if client.is_closed() {
            tracing::warn!("{}: connection lost; connecting again", self.shown);
            *client = Client::connect(&self.url, NoTls).map_err(|e| self.err(e))?;
        }
        Ok(client)
    }

    /// A row as a job, without its outputs.
    fn row_job(&self, row: &Row) -> Result<Job, StoreError> {
        let mut job = Job {
            id: JobId(row.get(0)),
            kind: JobKind::Checksum,
            input: bytes_path(row.get(2)),
            options: JobOptions::default(),
            state: JobState::Queued,
            priority: Priority(row.get(5)),
            attempts: row.get::<_, i32>(6).max(0) as u32,
            max_attempts: row.get::<_, i32>(7).max(0) as u32,
            error: row.get(8),
            created_at: row.get(9),
            started_at: row.get(10),
            finished_at: row.get(11),
            not_before: row.get(12),
            input_size: row.get::<_, Option<i64>>(13).map(|s| s as u64),
            input_mtime_ns: row.get(14),
            crashes: row.get::<_, i32>(15).max(0) as u32,
            outputs: Vec::new(),
            host: row.get(16),
            device: row.get(17),
            worker: row.get(18),
            claim: row.get(19),
            lease_until: row.get(20),
            updated_at: row.get(21),
        };
        let (kind, state, options): (String, String, String) = (row.get(1), row.get(4), row.get(3));
        decode_row(&mut job, &kind, &state, &options).map_err(|m| StoreError::Postgres {
            url: self.shown.clone(),
            message: m,
        })?;
        Ok(job)
    }

    fn job(&self, client: &mut Client, row: &Row) -> Result<Job, StoreError> {
        let mut job = self.row_job(row)?;
        job.outputs = client
            .query(
                "SELECT path FROM outputs WHERE job_id = $1 ORDER BY seq",
                &[&job.id.0],
            )
            .map_err(|e| self.err(e))?
            .into_iter()
            .map(|r| bytes_path(r.get(0)))
            .collect();
        Ok(job)
    }

    fn jobs(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<Vec<Job>, StoreError> {
        let mut client = self.client()?;
        let rows = client.query(sql, args).map_err(|e| self.err(e))?;
        rows.iter().map(|r| self.job(&mut client, r)).collect()
    }

    fn one(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        Ok(self
            .jobs(
                &format!("SELECT {COLUMNS} FROM jobs WHERE id = $1"),
                &[&id.0],
            )?
            .pop())
    }

    /// One change; whether it changed a row.
    fn change(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<bool, StoreError> {
        self.client()?
            .execute(sql, args)
            .map(|n| n > 0)
            .map_err(|e| self.err(e))
    }

    fn insert_with(
        &mut self,
        job: &NewJob,
        dedup: Option<String>,
    ) -> Result<Option<Job>, StoreError> {
        let options = serde_json::to_string(&job.options).map_err(|e| StoreError::Postgres {
            url: self.shown.clone(),
            message: format!("cannot encode job options: {e}"),
        })?;
        let id: Option<i64> = self
            .client()?
            .query_opt(
                "INSERT INTO jobs (kind, input, options, state, priority, max_attempts, created_at, \
                 not_before, input_size, input_mtime_ns, dedup, updated_at) \
                 VALUES ($1, $2, $3, 'queued', $4, $5, atelier_now_ms(), 0, $6, $7, $8, \
                 atelier_now_ms()) ON CONFLICT DO NOTHING RETURNING id",
                &[
                    &job.kind.name(),
                    &path_bytes(&job.input),
                    &options,
                    &job.priority.0,
                    &(job.max_attempts.min(i32::MAX as u32) as i32),
                    &job.input_size.map(|s| s as i64),
                    &job.input_mtime_ns,
                    &dedup,
                ],
            )
            .map_err(|e| self.err(e))?
            .map(|r| r.get(0));
        match id {
            Some(id) => self.one(JobId(id)),
            None => Ok(None),
        }
    }
}

fn migrate(client: &mut Client, shown: &str) -> Result<(), StoreError> {
    let err = |e: postgres::Error| StoreError::Postgres {
        url: shown.to_string(),
        message: message(&e),
    };
    let mut tx = client.transaction().map_err(err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(err)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS atelier_schema (version integer NOT NULL)")
        .map_err(err)?;
    let version: i32 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM atelier_schema", &[])
        .map_err(err)?
        .get(0);
    if version > PG_SCHEMA_VERSION {
        return Err(StoreError::Postgres {
            url: shown.to_string(),
            message: format!(
                "schema version {version} was written by a newer atelier (this one reads up to \
                 {PG_SCHEMA_VERSION})"
            ),
        });
    }
    for (to, sql) in MIGRATIONS {
        if version < *to {
            tx.batch_execute(sql).map_err(err)?;
            tracing::info!("{shown}: queue schema migrated to version {to}");
        }
    }
    if version < PG_SCHEMA_VERSION {
        tx.execute("DELETE FROM atelier_schema", &[]).map_err(err)?;
        tx.execute(
            "INSERT INTO atelier_schema (version) VALUES ($1)",
            &[&PG_SCHEMA_VERSION],
        )
        .map_err(err)?;
    }
    tx.commit().map_err(err)
}

impl JobStore for PgStore {
    fn insert(&mut self, job: &NewJob) -> Result<Job, StoreError> {
        self.insert_with(job, None)?
            .ok_or_else(|| StoreError::Postgres {
                url: self.shown.clone(),
                message: "a job without a de-duplication key was refused".to_string(),
            })
    }

    fn insert_unique(&mut self, job: &NewJob) -> Result<Option<Job>, StoreError> {
        let key = job.dedup_key();
        self.insert_with(job, key)
    }

    fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.one(id)
    }

    fn list(&self, filter: &JobFilter) -> Result<Vec<Job>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM jobs WHERE true");
        let states: Vec<String> = filter
            .states
            .iter()
            .map(|s| format!("'{}'", s.name()))
            .collect();
        if !states.is_empty() {
            sql += &format!(" AND state IN ({})", states.join(","));
        }
        if !filter.kinds.is_empty() {
            sql += &format!(" AND kind IN ({})", kinds_sql(&filter.kinds));
        }
        if let Some(t) = filter.changed_since {
            sql += &format!(" AND updated_at >= {t}");
        }
        let input = filter.input.as_deref().map(path_bytes);
        if input.is_some() {
            sql += " AND input = $1";
        }
        sql += " ORDER BY id DESC";
        if let Some(n) = filter.limit {
            sql += &format!(" LIMIT {n}");
        }
        let mut jobs = match &input {
            Some(b) => self.jobs(&sql, &[b])?,
            None => self.jobs(&sql, &[])?,
        };
        jobs.reverse();
        Ok(jobs)
    }

    fn claim_next_of(
        &mut self,
        worker: &WorkerInfo,
        lease: Duration,
        kinds: Option<&[JobKind]>,
    ) -> Result<Option<Job>, StoreError> {
        let only = kinds.map_or(String::new(), |k| {
            format!(" AND kind IN ({})", kinds_sql(k))
        });
        let token = super::new_token();
        let jobs = self.jobs(
            &format!(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, \
                 started_at = atelier_now_ms(), error = NULL, cancel_requested = false, \
                 owner = $1, claim = $2, lease_until = atelier_now_ms() + $3, host = $4, \
                 device = $5, worker = $6 \
                 WHERE id = (SELECT id FROM jobs WHERE state = 'queued' \
                 AND not_before <= atelier_now_ms(){only} ORDER BY priority DESC, id LIMIT 1 \
                 FOR UPDATE SKIP LOCKED) RETURNING {COLUMNS}"
            ),
            &[
                &(worker.pid as i32),
                &token,
                &ms(lease),
                &worker.host,
                &worker.device,
                &worker.id,
            ],
        )?;
        Ok(jobs.into_iter().next())
    }

    fn renew(&mut self, id: JobId, claim: &str, lease: Duration) -> Result<bool, StoreError> {
        self.change(
            "UPDATE jobs SET lease_until = atelier_now_ms() + $3 \
             WHERE id = $1 AND claim = $2 AND state = 'running'",
            &[&id.0, &claim, &ms(lease)],
        )
    }

    fn record_input(
        &mut self,
        id: JobId,
        claim: &str,
        size: u64,
        mtime_ns: i64,
    ) -> Result<bool, StoreError> {
        self.change(
            "UPDATE jobs SET input_size = $3, input_mtime_ns = $4 \
             WHERE id = $1 AND claim = $2 AND state = 'running'",
            &[&id.0, &claim, &(size as i64), &mtime_ns],
        )
    }

    fn complete(
        &mut self,
        id: JobId,
        claim: &str,
        outputs: &[PathBuf],
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(|e| self.err(e))?;
        let held = tx
            .execute(
                "UPDATE jobs SET state = 'done', finished_at = $3, error = NULL, \
                 lease_until = NULL WHERE id = $1 AND claim = $2 AND state = 'running'",
                &[&id.0, &claim, &now],
            )
            .map_err(|e| self.err(e))?
            > 0;
        if !held {
            // Lost the lease: the job is someone else's; record nothing (rolled back).
            return Ok(false);
        }
        tx.execute("DELETE FROM outputs WHERE job_id = $1", &[&id.0])
            .map_err(|e| self.err(e))?;
        for out in outputs {
            tx.execute(
                "INSERT INTO outputs (job_id, path) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&id.0, &path_bytes(out)],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(true)
    }

    fn fail(
        &mut self,
        id: JobId,
        claim: &str,
        error: &str,
        retry_at: Option<i64>,
        now: i64,
    ) -> Result<bool, StoreError> {
        match retry_at {
            Some(at) => self.change(
                "UPDATE jobs SET state = 'queued', error = $3, not_before = $4, finished_at = $5, \
                 lease_until = NULL WHERE id = $1 AND claim = $2 AND state = 'running'",
                &[&id.0, &claim, &error, &at, &now],
            ),
            None => self.change(
                "UPDATE jobs SET state = 'failed', error = $3, finished_at = $4, \
                 lease_until = NULL WHERE id = $1 AND claim = $2 AND state = 'running'",
                &[&id.0, &claim, &error, &now],
            ),
        }
    }

    fn cancel(&mut self, id: JobId, now: i64) -> Result<CancelOutcome, StoreError> {
        if self.change(
            "UPDATE jobs SET state = 'cancelled', finished_at = $2 \
             WHERE id = $1 AND state = 'queued'",
            &[&id.0, &now],
        )? {
            return Ok(CancelOutcome::Cancelled);
        }
        Ok(
            if self.change(
                "UPDATE jobs SET cancel_requested = true WHERE id = $1 AND state = 'running'",
                &[&id.0],
            )? {
                CancelOutcome::Requested
            } else {
                CancelOutcome::Nothing
            },
        )
    }

    fn mark_cancelled(&mut self, id: JobId, claim: &str, now: i64) -> Result<bool, StoreError> {
        self.change(
            "UPDATE jobs SET state = 'cancelled', finished_at = $3, cancel_requested = false, \
             lease_until = NULL WHERE id = $1 AND claim = $2 AND state = 'running'",
            &[&id.0, &claim, &now],
        )
    }

    fn cancel_requested(&self, id: JobId) -> Result<bool, StoreError> {
        Ok(self
            .client()?
            .query_opt("SELECT cancel_requested FROM jobs WHERE id = $1", &[&id.0])
            .map_err(|e| self.err(e))?
            .is_some_and(|r| r.get::<_, bool>(0)))
    }

    fn requeue(&mut self, id: JobId, claim: &str) -> Result<bool, StoreError> {
        self.change(
            "UPDATE jobs SET state = 'queued', attempts = GREATEST(attempts - 1, 0), \
             cancel_requested = false, lease_until = NULL \
             WHERE id = $1 AND claim = $2 AND state = 'running'",
            &[&id.0, &claim],
        )
    }

    fn retry(&mut self, id: JobId, now: i64) -> Result<bool, StoreError> {
        self.change(
            "UPDATE jobs SET state = 'queued', attempts = 0, crashes = 0, error = NULL, \
             not_before = $2, finished_at = NULL \
             WHERE id = $1 AND state IN ('failed', 'cancelled')",
            &[&id.0, &now],
        )
    }

    fn reprioritize(&mut self, id: JobId, priority: Priority) -> Result<bool, StoreError> {
        self.change(
            "UPDATE jobs SET priority = $2 WHERE id = $1 AND state IN ('queued', 'running')",
            &[&id.0, &priority.0],
        )
    }

    fn requeue_expired(
        &mut self,
        max_crashes: u32,
        clean: &mut dyn FnMut(&Job),
    ) -> Result<Vec<Job>, StoreError> {
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(|e| self.err(e))?;
        // Locked until commit: the late owner's renewal waits, then finds the job gone.
        let rows = tx
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM jobs WHERE state = 'running' \
                     AND (lease_until IS NULL OR lease_until <= atelier_now_ms()) \
                     ORDER BY id FOR UPDATE SKIP LOCKED"
                ),
                &[],
            )
            .map_err(|e| self.err(e))?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut ids = Vec::new();
        for row in &rows {
            let cancel: bool = row.get(22);
            // Outputs are not needed to decide.
            let job = self.row_job(row)?;
            clean(&job);
            let crashes = job.crashes.saturating_add(1).min(i32::MAX as u32) as i32;
            let id = job.id.0;
            match orphaned(&job, cancel, crashes as u32, max_crashes) {
                Orphaned::Cancelled => tx.execute(
                    "UPDATE jobs SET state = 'cancelled', cancel_requested = false, owner = NULL, \
                     lease_until = NULL, crashes = $2, finished_at = atelier_now_ms() \
                     WHERE id = $1",
                    &[&id, &crashes],
                ),
                Orphaned::Failed(error) => tx.execute(
                    "UPDATE jobs SET state = 'failed', owner = NULL, lease_until = NULL, \
                     crashes = $2, error = $3, finished_at = atelier_now_ms() WHERE id = $1",
                    &[&id, &crashes, &error],
                ),
                // A crash uses up one of the job's crashes, not one of its attempts.
                Orphaned::Queued => tx.execute(
                    "UPDATE jobs SET state = 'queued', cancel_requested = false, owner = NULL, \
                     lease_until = NULL, crashes = $2, attempts = GREATEST(attempts - 1, 0) \
                     WHERE id = $1",
                    &[&id, &crashes],
                ),
            }
            .map_err(|e| self.err(e))?;
            ids.push(job.id);
        }
        tx.commit().map_err(|e| self.err(e))?;
        drop(client);
        let mut jobs = Vec::new();
        for id in ids {
            jobs.extend(self.one(id)?);
        }
        Ok(jobs)
    }

    fn heartbeat(&mut self, worker: &WorkerInfo, running: u32) -> Result<(), StoreError> {
        self.change(
            "INSERT INTO workers (id, host, pid, device, started_at, heartbeat_at, running) \
             VALUES ($1, $2, $3, $4, atelier_now_ms(), atelier_now_ms(), $5) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = atelier_now_ms(), running = $5",
            &[
                &worker.id,
                &worker.host,
                &(worker.pid as i32),
                &worker.device,
                &(running.min(i32::MAX as u32) as i32),
            ],
        )
        .map(|_| ())
    }

    fn expire_dead_on_host(
        &mut self,
        host: &str,
        alive: &dyn Fn(u32) -> bool,
    ) -> Result<usize, StoreError> {
        let rows = self
            .client()?
            .query("SELECT id, pid FROM workers WHERE host = $1", &[&host])
            .map_err(|e| self.err(e))?;
        for row in rows {
            let (id, pid): (String, i32) = (row.get(0), row.get(1));
            if !alive(pid.max(0) as u32) {
                self.change("DELETE FROM workers WHERE id = $1", &[&id])?;
            }
        }
        self.client()?
            .execute(
                "UPDATE jobs SET lease_until = 0 WHERE state = 'running' AND host = $1 \
                 AND (worker IS NULL OR worker NOT IN (SELECT id FROM workers)) \
                 AND (lease_until IS NULL OR lease_until > 0)",
                &[&host],
            )
            .map(|n| n as usize)
            .map_err(|e| self.err(e))
    }

    fn leave(&mut self, worker: &WorkerInfo) -> Result<(), StoreError> {
        self.change("DELETE FROM workers WHERE id = $1", &[&worker.id])
            .map(|_| ())
    }

    fn workers(&self, within: Duration) -> Result<Vec<WorkerRow>, StoreError> {
        let rows = self
            .client()?
            .query(
                "SELECT id, host, pid, device, started_at, heartbeat_at, running FROM workers \
                 WHERE heartbeat_at >= atelier_now_ms() - $1 ORDER BY started_at, id",
                &[&ms(within)],
            )
            .map_err(|e| self.err(e))?;
        Ok(rows
            .iter()
            .map(|r| WorkerRow {
                id: r.get(0),
                host: r.get(1),
                pid: r.get::<_, i32>(2).max(0) as u32,
                device: r.get(3),
                started_at: r.get(4),
                heartbeat_at: r.get(5),
                running: r.get::<_, i32>(6).max(0) as u32,
            })
            .collect())
    }

    fn clear_finished(&mut self, all: bool) -> Result<usize, StoreError> {
        let sql = if all {
            "DELETE FROM jobs WHERE state IN ('done', 'failed', 'cancelled')"
        } else {
            "DELETE FROM jobs WHERE state = 'done'"
        };
        self.client()?
            .execute(sql, &[])
            .map(|n| n as usize)
            .map_err(|e| self.err(e))
    }

    fn latest_for(&self, input: &Path, kind: JobKind) -> Result<Option<Job>, StoreError> {
        Ok(self
            .jobs(
                &format!(
                    "SELECT {COLUMNS} FROM jobs WHERE input = $1 AND kind = $2 \
                     ORDER BY id DESC LIMIT 1"
                ),
                &[&path_bytes(input), &kind.name()],
            )?
            .pop())
    }

    fn record_output(&mut self, id: JobId, claim: &str, path: &Path) -> Result<bool, StoreError> {
        let held = self.change(
            "INSERT INTO outputs (job_id, path) SELECT id, $3 FROM jobs \
             WHERE id = $1 AND claim = $2 AND state = 'running' ON CONFLICT DO NOTHING",
            &[&id.0, &claim, &path_bytes(path)],
        )?;
        if held {
            return Ok(true);
        }
        // Recorded before by this run (a conflict) also counts as held.
        self.change(
            "SELECT 1 FROM jobs WHERE id = $1 AND claim = $2 AND state = 'running'",
            &[&id.0, &claim],
        )
    }

    fn is_output_of(&self, path: &Path, input: &Path, kind: JobKind) -> Result<bool, StoreError> {
        Ok(self
            .client()?
            .query_opt(
                "SELECT 1 FROM outputs o JOIN jobs j ON j.id = o.job_id \
                 WHERE o.path = $1 AND j.input = $2 AND j.kind = $3 LIMIT 1",
                &[&path_bytes(path), &path_bytes(input), &kind.name()],
            )
            .map_err(|e| self.err(e))?
            .is_some())
    }

    fn is_output(&self, path: &Path) -> Result<bool, StoreError> {
        Ok(self
            .client()?
            .query_opt(
                "SELECT 1 FROM outputs WHERE path = $1 LIMIT 1",
                &[&path_bytes(path)],
            )
            .map_err(|e| self.err(e))?
            .is_some())
    }

    fn count_active(&self) -> Result<usize, StoreError> {
        Ok(self
            .client()?
            .query_one(
                "SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')",
                &[],
            )
            .map_err(|e| self.err(e))?
            .get::<_, i64>(0) as usize)
    }

    fn next_due(&self) -> Result<Option<i64>, StoreError> {
        Ok(self
            .client()?
            .query_one(
                "SELECT MIN(not_before) FROM jobs WHERE state = 'queued'",
                &[],
            )
            .map_err(|e| self.err(e))?
            .get(0))
    }

    fn done_with_move(&self) -> Result<Vec<Job>, StoreError> {
        self.jobs(
            &format!(
                "SELECT {COLUMNS} FROM jobs WHERE state = 'done' \
                 AND options LIKE '%\"on-done\":\"move\"%'"
            ),
            &[],
        )
    }

    fn describe(&self) -> String {
        self.shown.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_libpq_key_value_strings_name_a_queue_and_paths_do_not() {
        for q in [
            "postgres://atelier@db/q",
            "postgresql://atelier@%2Frun%2Fpostgresql:5432/q",
            "host=/run/postgresql port=5433 user=atelier dbname=q",
            "dbname=q",
            "  user = atelier host=db",
        ] {
            assert!(is_url(q), "{q}");
        }
        for path in [
            "/srv/queue.sqlite",
            "queue.sqlite",
            "~/q=1.sqlite",
            "hosts=x",
            "",
        ] {
            assert!(!is_url(path), "{path}");
        }
    }

    #[test]
    fn the_libpq_host_form_is_shown_like_a_url_without_its_password() {
        assert_eq!(
            redact("host=/run/postgresql port=5433 user=atelier password=s3cret dbname=q"),
            "postgres://atelier@/run/postgresql:5433/q"
        );
        assert_eq!(
            redact("postgres://atelier:s3cret@%2Frun%2Fpostgresql:5433/q"),
            "postgres://atelier@/run/postgresql:5433/q"
        );
        assert_eq!(
            redact("host=db user=atelier dbname=q"),
            "postgres://atelier@db/q"
        );
    }
}
