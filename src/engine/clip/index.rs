//! The persistent embedding index: SQLite (WAL, one transaction per batch), keyed by
//! path + size + mtime + content hash + model name. Search is brute-force cosine over one
//! contiguous matrix (see `model::top_k`); an ANN index can later sit behind `Index::search`.
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{path}: index database error: {source}")]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{path}: cannot create the index folder: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: embeddings of different sizes for model '{model}' (re-index)")]
    Inconsistent { path: PathBuf, model: String },
    #[error("search failed: {0}")]
    Torch(#[from] tch::TchError),
}

/// A file's identity as the index keys it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileKey {
    pub path: String,
    pub size: i64,
    pub mtime_ns: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Same size and mtime, or same content hash: never re-embedded.
    Unchanged,
    New,
    Changed,
}

pub struct Index {
    conn: Connection,
    path: PathBuf,
    pub model: String,
}

/// Where the index lives: the configured path, else `$XDG_DATA_HOME/atelier/clip-index.sqlite`.
pub fn default_path(configured: &str) -> PathBuf {
    if !configured.is_empty() {
        return crate::config::expand_home(configured);
    }
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("atelier")
        .join("clip-index.sqlite")
}

pub fn file_key(path: &Path) -> std::io::Result<FileKey> {
    let abs = std::fs::canonicalize(path)?;
    let meta = std::fs::metadata(&abs)?;
    let mtime_ns = meta
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    Ok(FileKey {
        path: abs.to_string_lossy().into_owned(),
        size: meta.len() as i64,
        mtime_ns,
    })
}

pub fn content_hash(path: &Path) -> std::io::Result<String> {
    crate::engine::store::sha256_file(path).map_err(|e| match e {
        crate::engine::store::StoreError::Io { source, .. } => source,
        other => std::io::Error::other(other.to_string()),
    })
}

fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn from_blob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

impl Index {
    pub fn open(path: &Path, model: &str) -> Result<Self, IndexError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| IndexError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let db = |source| IndexError::Db {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS embeddings (
                path TEXT NOT NULL,
                model TEXT NOT NULL,
                size INTEGER NOT NULL,
                mtime_ns INTEGER NOT NULL,
                hash TEXT NOT NULL,
                dim INTEGER NOT NULL,
                embedding BLOB NOT NULL,
                PRIMARY KEY (path, model)
            );",
        )
        .map_err(db)?;
        Ok(Index {
            conn,
            path: path.to_path_buf(),
            model: model.to_string(),
        })
    }

    fn db(&self) -> impl Fn(rusqlite::Error) -> IndexError + '_ {
        move |source| IndexError::Db {
            path: self.path.clone(),
            source,
        }
    }

    /// Whether `key` needs embedding; returns the content hash when it was computed.
    /// A file with new mtime but the same content gets its mtime updated, not re-embedded.
    pub fn status(
        &self,
        key: &FileKey,
        file: &Path,
    ) -> Result<(Status, Option<String>), IndexError> {
        let row: Option<(i64, i64, String)> = self
            .conn
            .query_row(
                "SELECT size, mtime_ns, hash FROM embeddings WHERE path = ?1 AND model = ?2",
                params![key.path, self.model],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(self.db())?;
        let hash = |f: &Path| {
            content_hash(f).map_err(|source| IndexError::Io {
                path: f.to_path_buf(),
                source,
            })
        };
        match row {
            Some((size, mtime, _)) if size == key.size && mtime == key.mtime_ns => {
                Ok((Status::Unchanged, None))
            }
            Some((_, _, old)) => {
                let h = hash(file)?;
                if h == old {
                    self.conn
                        .execute(
                            "UPDATE embeddings SET size = ?1, mtime_ns = ?2 WHERE path = ?3 AND model = ?4",
                            params![key.size, key.mtime_ns, key.path, self.model],
                        )
                        .map_err(self.db())?;
                    Ok((Status::Unchanged, Some(h)))
                } else {
                    Ok((Status::Changed, Some(h)))
                }
            }
            None => Ok((Status::New, Some(hash(file)?))),
        }
    }

    /// Stores one batch in one transaction: a killed run keeps every finished batch.
    pub fn put_batch(&mut self, rows: &[(FileKey, String, Vec<f32>)]) -> Result<(), IndexError> {
        let path = self.path.clone();
        let db = |source| IndexError::Db {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(db)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO embeddings (path, model, size, mtime_ns, hash, dim, embedding)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(db)?;
            for (key, hash, emb) in rows {
                stmt.execute(params![
                    key.path,
                    self.model,
                    key.size,
                    key.mtime_ns,
                    hash,
                    emb.len() as i64,
                    to_blob(emb)
                ])
                .map_err(db)?;
            }
        }
        tx.commit().map_err(db)
    }

    /// Removes rows under `root` (an absolute folder) whose files were not `seen`; returns how many.
    pub fn prune(&mut self, root: &str, seen: &HashSet<String>) -> Result<usize, IndexError> {
        let prefix = format!("{}/", root.trim_end_matches('/'));
        let stale: Vec<String> = {
            let mut stmt = self
                .conn
                .prepare("SELECT path FROM embeddings WHERE model = ?1 AND substr(path, 1, length(?2)) = ?2")
                .map_err(self.db())?;
            let rows = stmt
                .query_map(params![self.model, prefix], |r| r.get::<_, String>(0))
                .map_err(self.db())?;
            rows.filter_map(Result::ok)
                .filter(|p| !seen.contains(p) && !Path::new(p).is_file())
                .collect()
        };
        let path = self.path.clone();
        let db = |source| IndexError::Db {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(db)?;
        for p in &stale {
            tx.execute(
                "DELETE FROM embeddings WHERE path = ?1 AND model = ?2",
                params![p, self.model],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(stale.len())
    }

    pub fn get(&self, path: &str) -> Result<Option<Vec<f32>>, IndexError> {
        self.conn
            .query_row(
                "SELECT embedding FROM embeddings WHERE path = ?1 AND model = ?2",
                params![path, self.model],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .optional()
            .map(|b| b.map(|b| from_blob(&b)))
            .map_err(self.db())
    }

    pub fn len(&self) -> Result<usize, IndexError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM embeddings WHERE model = ?1",
                params![self.model],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as usize)
            .map_err(self.db())
    }

    pub fn is_empty(&self) -> Result<bool, IndexError> {
        Ok(self.len()? == 0)
    }

    /// Every path and its embedding as one row-major matrix (N x dim).
    pub fn matrix(&self) -> Result<(Vec<String>, Vec<f32>, usize), IndexError> {
        let mut stmt = self
            .conn
            .prepare("SELECT path, dim, embedding FROM embeddings WHERE model = ?1 ORDER BY path")
            .map_err(self.db())?;
        let rows = stmt
            .query_map(params![self.model], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })
            .map_err(self.db())?;
        let (mut paths, mut matrix, mut dim) = (Vec::new(), Vec::new(), 0usize);
        for row in rows {
            let (p, d, blob) = row.map_err(self.db())?;
            if dim == 0 {
                dim = d as usize;
            }
            if d as usize != dim || blob.len() != dim * 4 {
                return Err(IndexError::Inconsistent {
                    path: self.path.clone(),
                    model: self.model.clone(),
                });
            }
            paths.push(p);
            matrix.extend(from_blob(&blob));
        }
        Ok((paths, matrix, dim))
    }

    /// The `k` paths nearest to a normalized query, by cosine.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<(String, f32)>, IndexError> {
        let (paths, matrix, dim) = self.matrix()?;
        if dim != 0 && query.len() != dim {
            return Err(IndexError::Inconsistent {
                path: self.path.clone(),
                model: self.model.clone(),
            });
        }
        let hits = super::model::top_k(&matrix, dim, query, k)?;
        Ok(hits
            .into_iter()
            .map(|(i, s)| (paths[i].clone(), s))
            .collect())
    }
}
