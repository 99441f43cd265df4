//! `tag` and `index`: CLIP on the model thread, the model loaded once.
use crate::config::ClipConfig;
use crate::engine::clip::index::{self, Index, Status};
use crate::engine::clip::job::{self, ClipInfo};
use crate::engine::clip::label_cache;
use crate::engine::clip::preprocess::load_image;
use crate::engine::clip::zero_shot;
use crate::engine::store::{self, InstalledModel};
use crate::engine::DeviceThread;
use crate::jobs::{Job, JobKind, RunContext, RunError, Runner};
use crate::output::sidecar;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

const TEXT_BATCH: usize = 64;

/// A label set and its ensembled embeddings, per (model, label set name).
type LabelCache = HashMap<(String, String), (zero_shot::LabelSet, Vec<Vec<f32>>)>;

/// Tags (`NAME.tags.json` + caption `NAME.txt`) or indexes images, one job per image.
pub struct ClipRunner {
    kind: JobKind,
    thread: DeviceThread,
    models_dir: PathBuf,
    config: ClipConfig,
    /// Label embeddings per (model, label set), computed once.
    labels: Mutex<LabelCache>,
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
            labels: Mutex::new(HashMap::new()),
        }
    }

    fn model(&self, job: &Job) -> Result<(InstalledModel, ClipInfo), RunError> {
        let name = job.options.model.as_deref().unwrap_or(&self.config.model);
        let model = store::find(&self.models_dir, name, "clip")
            .map_err(|e| RunError::Permanent(e.to_string()))?;
        let info = job::preload(&self.thread, model.clone()).map_err(RunError::Transient)?;
        Ok((model, info))
    }

    fn embed(
        &self,
        job: &Job,
        model: &InstalledModel,
        info: &ClipInfo,
    ) -> Result<Vec<f32>, RunError> {
        let pixels = load_image(&job.input, &info.preprocess)
            .map_err(|e| RunError::Permanent(e.to_string()))?;
        ctx_embed(&self.thread, model, pixels)
    }

    fn tag(&self, job: &Job, ctx: &RunContext) -> Result<Vec<PathBuf>, RunError> {
        let (model, info) = self.model(job)?;
        let set_name = job
            .options
            .labels
            .clone()
            .unwrap_or_else(|| "general".into());
        let key = (model.name().to_string(), set_name.clone());
        let mut cache = self.labels.lock().unwrap_or_else(|e| e.into_inner());
        if !cache.contains_key(&key) {
            let set = zero_shot::load_label_set(&set_name, zero_shot::user_dir().as_deref())
                .map_err(|e| RunError::Permanent(e.to_string()))?;
            let (embs, _) = label_cache::embeddings(&self.thread, &model, &set, TEXT_BATCH)
                .map_err(RunError::Transient)?;
            cache.insert(key.clone(), (set, embs));
        }
        let (set, label_embs) = cache
            .get(&key)
            .cloned()
            .ok_or_else(|| RunError::Transient("the label embeddings were not kept".into()))?;
        drop(cache);
        ctx.check_cancel()?;
        let emb = self.embed(job, &model, &info)?;
        let scores = zero_shot::scores(&emb, &label_embs, info.logit_scale);
        let top = zero_shot::top_k(&scores, job.options.top_k.unwrap_or(5), 0.0);
        let tags: Vec<sidecar::Tag> = top
            .iter()
            .map(|(i, s)| sidecar::Tag::scored(&set.labels[*i].name, *s))
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
        let (model, info) = self.model(job)?;
        let db_path = job
            .options
            .index
            .clone()
            .unwrap_or_else(|| index::default_path(&self.config.index));
        let mut db =
            Index::open(&db_path, model.name()).map_err(|e| RunError::Transient(e.to_string()))?;
        let key = index::file_key(&job.input)
            .map_err(|e| RunError::Permanent(format!("cannot read the file: {e}")))?;
        let (status, hash) = db
            .status(&key, &job.input)
            .map_err(|e| RunError::Transient(e.to_string()))?;
        if let (Status::New | Status::Changed, Some(hash)) = (status, hash) {
            let emb = self.embed(job, &model, &info)?;
            db.put_batch(&[(key, hash, emb)])
                .map_err(|e| RunError::Transient(e.to_string()))?;
        }
        Ok(Vec::new())
    }
}

fn ctx_embed(
    thread: &DeviceThread,
    model: &InstalledModel,
    pixels: Vec<f32>,
) -> Result<Vec<f32>, RunError> {
    job::encode_images(thread, model.clone(), vec![pixels])
        .map_err(RunError::Transient)?
        .pop()
        .ok_or_else(|| RunError::Transient("the model returned no embedding".into()))
}

impl Runner for ClipRunner {
    fn preload(&self, model: Option<&str>) -> Result<(), String> {
        let name = model.unwrap_or(&self.config.model);
        let model = store::find(&self.models_dir, name, "clip").map_err(|e| e.to_string())?;
        job::preload(&self.thread, model).map(|_| ())
    }

    fn run(&self, job: &Job, ctx: &RunContext) -> Result<Vec<PathBuf>, RunError> {
        match self.kind {
            JobKind::Index => self.index(job),
            _ => self.tag(job, ctx),
        }
    }
}
