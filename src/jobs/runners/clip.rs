//! `tag` and `index`: CLIP on the model thread, through one [`ClipSession`] per model.
use crate::config::ClipConfig;
use crate::engine::clip::index::{self, Index, Status};
use crate::engine::clip::session::ClipSession;
use crate::engine::clip::zero_shot;
use crate::engine::store;
use crate::engine::DeviceThread;
use crate::jobs::{Job, JobKind, RunContext, RunError, Runner};
use crate::output::sidecar;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Tags (`NAME.tags.json` + caption `NAME.txt`) or indexes images, one job per image.
pub struct ClipRunner {
    kind: JobKind,
    thread: DeviceThread,
    models_dir: PathBuf,
    config: ClipConfig,
    /// One session per model a job names, started once (its label embeddings with it).
    sessions: Mutex<HashMap<String, Arc<ClipSession>>>,
}

impl ClipRunner {
    /// `kind` is [`JobKind::Tag`] or [`JobKind::Index`].
    pub fn new(
        kind: JobKind,
        thread: DeviceThread,
        models_dir: PathBuf,
        config: ClipConfig,
    ) -> Self {
        ClipRunner {
            kind,
            thread,
            models_dir,
            config,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn session(&self, name: Option<&str>) -> Result<Arc<ClipSession>, RunError> {
        let name = name.unwrap_or(&self.config.model);
        let model = store::find(&self.models_dir, name, "clip")
            .map_err(|e| RunError::Permanent(e.to_string()))?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = sessions.get(model.name()) {
            return Ok(Arc::clone(s));
        }
        let key = model.name().to_string();
        let session =
            Arc::new(ClipSession::start(self.thread.clone(), model).map_err(RunError::Transient)?);
        sessions.insert(key, Arc::clone(&session));
        Ok(session)
    }

    fn embed(&self, job: &Job, session: &ClipSession) -> Result<Vec<f32>, RunError> {
        let pixels = session.pixels(&job.input).map_err(RunError::Permanent)?;
        session
            .embed_pixels(vec![pixels])
            .map_err(RunError::Transient)?
            .pop()
            .ok_or_else(|| RunError::Transient("the model returned no embedding".into()))
    }

    fn tag(&self, job: &Job, ctx: &RunContext) -> Result<Vec<PathBuf>, RunError> {
        let session = self.session(job.options.model.as_deref())?;
        let set_name = job.options.labels.as_deref().unwrap_or("general");
        let set = zero_shot::load_label_set(set_name, zero_shot::user_dir().as_deref())
            .map_err(|e| RunError::Permanent(e.to_string()))?;
        let labels = session.labels(&set).map_err(RunError::Transient)?;
        ctx.check_cancel()?;
        let emb = self.embed(job, &session)?;
        let scores = session.scores(&emb, &labels);
        let top = zero_shot::top_k(&scores, job.options.top_k.unwrap_or(5), 0.0);
        let tags: Vec<sidecar::Tag> = top
            .iter()
            .map(|(i, s)| sidecar::Tag::scored(&labels.set.labels[*i].name, *s))
            .collect();
        let (json, caption) = sidecar::contents(&job.input, &tags);
        let dir = job.output_dir();
        std::fs::create_dir_all(&dir).map_err(|e| {
            RunError::Transient(format!(
                "{}: cannot create the output folder: {e}",
                dir.display()
            ))
        })?;
        let (json_path, txt_path) = sidecar::paths_in(&dir, &job.input);
        Ok(vec![
            ctx.write(&json_path, &json)?,
            ctx.write(&txt_path, &caption)?,
        ])
    }

    fn index(&self, job: &Job) -> Result<Vec<PathBuf>, RunError> {
        let session = self.session(job.options.model.as_deref())?;
        let db_path = job
            .options
            .index
            .clone()
            .unwrap_or_else(|| index::default_path(&self.config.index));
        let mut db = Index::open(&db_path, session.model().name())
            .map_err(|e| RunError::Transient(e.to_string()))?;
        let key = index::file_key(&job.input)
            .map_err(|e| RunError::Permanent(format!("cannot read the file: {e}")))?;
        let (status, hash) = db
            .status(&key, &job.input)
            .map_err(|e| RunError::Transient(e.to_string()))?;
        if let (Status::New | Status::Changed, Some(hash)) = (status, hash) {
            let emb = self.embed(job, &session)?;
            db.put_batch(&[(key, hash, emb)])
                .map_err(|e| RunError::Transient(e.to_string()))?;
        }
        Ok(Vec::new())
    }
}

impl Runner for ClipRunner {
    fn preload(&self, model: Option<&str>) -> Result<(), String> {
        self.session(model).map(|_| ()).map_err(|e| e.to_string())
    }

    fn run(&self, job: &Job, ctx: &RunContext) -> Result<Vec<PathBuf>, RunError> {
        match self.kind {
            JobKind::Index => self.index(job),
            _ => self.tag(job, ctx),
        }
    }
}
