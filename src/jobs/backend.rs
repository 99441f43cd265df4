//! Which journal a process uses: the SQLite file (the embedded default) or a shared
//! PostgreSQL queue, chosen by `--queue`, `ATELIER_QUEUE_URL`, `[queue] url` and `path`.
use super::postgres::{is_url, redact, PgStore};
use super::sqlite::{default_path, expand_home, SqliteStore};
use super::store::{JobStore, StoreError};
use std::path::{Path, PathBuf};

/// Where the queue lives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum QueueLocation {
    Sqlite(PathBuf),
    /// A `postgres://` URL (or a libpq `key=value` string).
    Postgres(String),
}

/// The environment variable that names a PostgreSQL queue (over `[queue] url`).
pub const QUEUE_URL_ENV: &str = "ATELIER_QUEUE_URL";

impl QueueLocation {
    /// `flag` (a journal file or a `postgres://` URL), else `ATELIER_QUEUE_URL`, else
    /// `[queue] url`, else the SQLite journal at `[queue] path` (or the default).
    pub fn resolve(config: &crate::config::Config, flag: Option<&Path>) -> QueueLocation {
        if let Some(f) = flag {
            return Self::from_text(&f.to_string_lossy())
                .unwrap_or(QueueLocation::Sqlite(f.into()));
        }
        let env = std::env::var(QUEUE_URL_ENV).unwrap_or_default();
        for url in [env.as_str(), config.queue.url.as_str()] {
            if !url.trim().is_empty() {
                return QueueLocation::Postgres(url.trim().to_string());
            }
        }
        if config.queue.path.is_empty() {
            QueueLocation::Sqlite(default_path())
        } else {
            QueueLocation::Sqlite(expand_home(&config.queue.path))
        }
    }

    /// A PostgreSQL location when `text` is a `postgres://` URL.
    pub fn from_text(text: &str) -> Option<QueueLocation> {
        is_url(text).then(|| QueueLocation::Postgres(text.to_string()))
    }

    /// For messages: the file, or the URL without its password.
    pub fn describe(&self) -> String {
        match self {
            QueueLocation::Sqlite(p) => p.display().to_string(),
            QueueLocation::Postgres(url) => redact(url),
        }
    }
}

/// Opens (creating, and migrating to this build's schema) the queue at `location`.
pub fn open_store(location: &QueueLocation) -> Result<Box<dyn JobStore>, StoreError> {
    Ok(match location {
        QueueLocation::Sqlite(path) => Box::new(SqliteStore::open(path)?),
        QueueLocation::Postgres(url) => Box::new(PgStore::open(url)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_flag_is_a_url_and_anything_else_a_file() {
        let config = crate::config::Config::default();
        let pg = Path::new("postgres://atelier@db.example/queue");
        assert_eq!(
            QueueLocation::resolve(&config, Some(pg)),
            QueueLocation::Postgres("postgres://atelier@db.example/queue".into())
        );
        let file = Path::new("/srv/q.sqlite");
        assert_eq!(
            QueueLocation::resolve(&config, Some(file)),
            QueueLocation::Sqlite(file.into())
        );
    }

    #[test]
    fn a_url_is_shown_without_its_password() {
        let loc = QueueLocation::Postgres("postgres://atelier:s3cret@db.example:5433/q".into());
        let shown = loc.describe();
        assert_eq!(shown, "postgres://atelier@db.example:5433/q");
        assert!(!shown.contains("s3cret"));
    }
}
