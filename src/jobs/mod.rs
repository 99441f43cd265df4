//! Durable job queue: job model, SQLite journal, workers, progress (in progress).
