//! A throwaway PostgreSQL cluster for tests: `initdb` into a temp folder, a postmaster that
//! listens only on a Unix socket in that folder (no TCP), a fresh database per caller, and
//! `pg_ctl stop -m immediate` plus removal on drop. Debian's `postgresql-15` binaries;
//! without them the test fails, saying what to install (it never skips).
//!
//! Include it with `#[path = "common/pgcluster.rs"] mod pgcluster;`.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Where Debian's `postgresql-15` puts the server binaries.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

pub struct PgCluster {
    /// Owned by the `postgres` user when we run as root (root cannot run the server).
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
    databases: AtomicUsize,
}

/// `s` with everything but letters, digits and `._-` percent-encoded (a URL's host part).
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'_' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn check(out: &Output, what: &str, log: &Path) {
    if !out.status.success() {
        let log = std::fs::read_to_string(log).unwrap_or_default();
        panic!(
            "{what} failed ({}):\n{}\n{}\nserver log:\n{log}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl PgCluster {
    /// A new cluster of its own (initdb takes a second or two).
    pub fn start() -> PgCluster {
        let bin = Path::new(PG_BIN);
        for tool in ["initdb", "pg_ctl", "postgres"] {
            assert!(
                bin.join(tool).is_file(),
                "{}/{tool} is missing: these tests need a real PostgreSQL 15 server \
                 (apt install postgresql-15; tools/dev.sh setup installs it)",
                bin.display()
            );
        }
        // SAFETY: geteuid has no preconditions.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        // /tmp, not $TMPDIR: the socket path must stay short (108 bytes) and the postgres
        // user must reach it.
        let dir = tempfile::Builder::new()
            .prefix("atelier-pg")
            .tempdir_in("/tmp")
            .expect("a temp folder in /tmp for the PostgreSQL cluster");
        if as_postgres {
            let owner = Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path())
                .output()
                .expect("run chown");
            assert!(
                owner.status.success(),
                "cannot give {} to the postgres user ({}): is postgresql-15 installed \
                 (apt install postgresql-15)?",
                dir.path().display(),
                String::from_utf8_lossy(&owner.stderr).trim()
            );
        }
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // Only names the socket file (the folder is ours), so it cannot clash with a server.
        let port = 20000 + ((std::process::id() as usize * 13 + n) % 20000) as u16;
        let cluster = PgCluster {
            dir,
            port,
            as_postgres,
            databases: AtomicUsize::new(0),
        };
        let data = cluster.data();
        let log = cluster.log_path();
        let out = cluster
            .tool("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"])
            .output()
            .expect("run initdb");
        check(&out, "initdb", &log);
        // Durability settings off: the tests kill clients, never the server.
        let options = format!(
            "-k {} -c listen_addresses='' -p {port} -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off",
            cluster.socket_dir().display()
        );
        let out = cluster
            .tool("pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-s", "-o", &options, "start"])
            .output()
            .expect("run pg_ctl start");
        check(&out, "pg_ctl start", &log);
        cluster
    }

    /// One cluster shared by the tests of this binary that run at the same time; it stops
    /// when the last of them drops it (a later test starts a new one).
    pub fn shared() -> Arc<PgCluster> {
        static SHARED: Mutex<Weak<PgCluster>> = Mutex::new(Weak::new());
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = shared.upgrade() {
            return c;
        }
        let c = Arc::new(PgCluster::start());
        *shared = Arc::downgrade(&c);
        c
    }

    /// A PostgreSQL program, run as the postgres user when we are root.
    fn tool(&self, name: &str) -> Command {
        let program = Path::new(PG_BIN).join(name);
        if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The folder holding the server's socket (`.s.PGSQL.PORT`).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `postgres://postgres@%2Ftmp%2F…:PORT/DB`: the socket folder percent-encoded as host.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@{}:{}/{db}",
            percent_encode(&self.socket_dir().to_string_lossy()),
            self.port
        )
    }

    /// The same database in libpq's `key=value` form.
    pub fn key_value(&self, db: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={db}",
            self.socket_dir().display(),
            self.port
        )
    }

    /// A fresh, empty database named after `hint`; its URL.
    pub fn database(&self, hint: &str) -> String {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let clean: String = hint
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let name = format!("t{n}_{clean}");
        let mut admin = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to {}: {e}\n{}", self.url("postgres"), self.log()));
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        self.url(&name)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Immediate: nothing here is worth a clean checkpoint.
        let _ = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "-s", "stop"])
            .output();
        // The TempDir removes the folder (root may remove the postgres user's files).
    }
}
