//! `transcribe`: Whisper on the model thread, the same engine job as `atelier transcribe`.
use crate::config::{check_speakers, WhisperConfig};
use crate::engine::speaker::{self, DiarizeOptions, SpeakerCount};
use crate::engine::store::{self, InstalledModel};
use crate::engine::whisper::job::{self, JobMsg, SpeakerJob};
use crate::engine::whisper::tokenizer::to_language_code;
use crate::engine::whisper::{Event, TranscribeOptions};
use crate::engine::DeviceThread;
use crate::jobs::{Job, RunContext, RunError, Runner};
use crate::media::audio::{stream_file, AudioError};
use crate::output::atomic::output_path;
use crate::output::writers::{self, rttm_file_id, Format, WriterOptions};
use std::path::PathBuf;

/// Transcribes with the models kept warm on `thread`; job options override the config.
pub struct WhisperRunner {
    thread: DeviceThread,
    models_dir: PathBuf,
    config: WhisperConfig,
    /// Some job will diarize: [`Runner::preload`] loads the speaker encoder too.
    preload_speakers: bool,
}

impl WhisperRunner {
    pub fn new(thread: DeviceThread, models_dir: PathBuf, config: WhisperConfig) -> Self {
        WhisperRunner {
            thread,
            models_dir,
            config,
            preload_speakers: false,
        }
    }

    /// Loads the speaker encoder with the Whisper model in [`Runner::preload`].
    pub fn preloading_speakers(mut self, yes: bool) -> Self {
        self.preload_speakers = yes;
        self
    }

    fn speaker_model(&self) -> Result<InstalledModel, String> {
        store::find(&self.models_dir, speaker::DEFAULT_MODEL, "speaker")
            .map_err(|e| format!("{e}; {}", speaker::MISSING_MODEL_HINT))
    }

    /// The job's diarization, if it asks for one.
    fn speakers(&self, job: &Job, vad: bool) -> Result<Option<SpeakerJob>, String> {
        let o = &job.options;
        if o.diarize != Some(true) {
            return Ok(None);
        }
        if !vad {
            return Err("diarize needs the VAD's speech ranges: turn the VAD on".into());
        }
        check_speakers(o.speakers, o.min_speakers, o.max_speakers, "")?;
        let d = SpeakerCount::default();
        let count = SpeakerCount {
            exact: o.speakers,
            min: o.min_speakers.unwrap_or(d.min),
            max: o.max_speakers.unwrap_or(d.max),
        };
        Ok(Some(SpeakerJob {
            model: self.speaker_model()?,
            options: DiarizeOptions {
                count,
                names: Vec::new(),
            },
        }))
    }

    fn models(
        &self,
        job_model: Option<&str>,
        vad: bool,
    ) -> Result<(InstalledModel, Option<InstalledModel>), String> {
        let name = job_model.unwrap_or(&self.config.model);
        let model = store::find(&self.models_dir, name, "whisper").map_err(|e| e.to_string())?;
        let vad_model = if vad {
            Some(
                store::find(&self.models_dir, &self.config.vad_model, "vad").map_err(|e| {
                    format!("{e}; VAD is on: install it (tools/dev.sh demo) or set vad = false")
                })?,
            )
        } else {
            None
        };
        Ok((model, vad_model))
    }

    fn options(&self, job: &Job) -> Result<TranscribeOptions, String> {
        let mut opts = TranscribeOptions::default();
        let language = job
            .options
            .language
            .as_deref()
            .unwrap_or(&self.config.language);
        if !language.is_empty() {
            opts.decode.language = Some(
                to_language_code(language)
                    .ok_or_else(|| format!("unknown language '{language}'"))?
                    .to_string(),
            );
        }
        let beam = job
            .options
            .beam_size
            .unwrap_or(self.config.beam_size as usize);
        opts.decode.beam_size = (beam > 1).then_some(beam);
        opts.word_timestamps = self.config.word_timestamps;
        Ok(opts)
    }

    /// The job's formats. A diarized job also writes RTTM when its formats are the config's
    /// or `all` (it has speakers to write); named formats are only those.
    fn formats(&self, job: &Job, diarized: bool) -> Result<Vec<Format>, String> {
        let names = if job.options.formats.is_empty() {
            &self.config.output_formats
        } else {
            &job.options.formats
        };
        let mut out = Vec::new();
        for n in names {
            let mut parsed = Format::parse(n).map_err(|e| e.to_string())?;
            if diarized && n.trim().eq_ignore_ascii_case("all") {
                parsed.push(Format::Rttm);
            }
            for f in parsed {
                if !out.contains(&f) {
                    out.push(f);
                }
            }
        }
        if out.is_empty() {
            out = Format::all();
        }
        if diarized && job.options.formats.is_empty() && !out.contains(&Format::Rttm) {
            out.push(Format::Rttm);
        }
        if out.contains(&Format::Rttm) && !diarized {
            return Err("the rttm format needs diarize = true (or --diarize)".into());
        }
        Ok(out)
    }
}

/// Audio errors name the file and are about the input: marked so.
fn input_error(e: AudioError) -> String {
    format!("{INPUT_ERROR}{e}")
}

const INPUT_ERROR: &str = "\u{1}input:";

impl Runner for WhisperRunner {
    fn preload(&self, model: Option<&str>) -> Result<(), String> {
        let (model, vad) = self.models(model, self.config.vad || self.preload_speakers)?;
        job::preload(&self.thread, model, vad)?;
        if self.preload_speakers {
            job::preload_speaker(&self.thread, self.speaker_model()?)?;
        }
        Ok(())
    }

    fn run(&self, job: &Job, ctx: &RunContext) -> Result<Vec<PathBuf>, RunError> {
        let mut opts = self.options(job).map_err(RunError::Permanent)?;
        let diarize = job.options.diarize == Some(true);
        // A diarized job needs the VAD's speech ranges: on unless the job turns it off.
        let vad = job.options.vad.unwrap_or(self.config.vad || diarize);
        let speakers = self.speakers(job, vad).map_err(RunError::Permanent)?;
        let formats = self
            .formats(job, speakers.is_some())
            .map_err(RunError::Permanent)?;
        if speakers.is_some() {
            // speakers are aligned to words
            opts.word_timestamps = true;
        }
        let (model, vad_model) = self
            .models(job.options.model.as_deref(), vad)
            .map_err(RunError::Permanent)?;
        let rx = job::submit_diarized(
            &self.thread,
            model,
            vad_model,
            stream_file(&job.input, 30.0, input_error),
            opts,
            ctx.cancel.clone(),
            speakers,
        );
        let mut result = Err("the model thread stopped".to_string());
        for msg in rx {
            match msg {
                JobMsg::Event(Event::Segment(seg)) => ctx.segment(seg),
                JobMsg::Event(Event::Progress {
                    done_seconds,
                    total_seconds,
                }) if total_seconds > 0.0 => ctx.progress(
                    Some((done_seconds / total_seconds).clamp(0.0, 1.0) as f32),
                    format!("{done_seconds:.0}/{total_seconds:.0} s"),
                ),
                JobMsg::Event(Event::Language { code, .. }) => {
                    ctx.progress(None, format!("language: {code}"))
                }
                JobMsg::Event(Event::Warning(w)) => {
                    tracing::warn!("{}: {w}", job.input.display());
                    ctx.progress(None, w)
                }
                JobMsg::Event(_) | JobMsg::Speech { .. } => {}
                JobMsg::Done(r) => {
                    result = r;
                    break;
                }
            }
        }
        let transcript = result.map_err(|e| {
            if ctx.cancel.is_cancelled() {
                RunError::Cancelled
            } else if let Some(input) = e.strip_prefix(INPUT_ERROR) {
                RunError::Permanent(input.to_string())
            } else {
                RunError::Transient(e)
            }
        })?;
        ctx.check_cancel()?;
        let dir = job.output_dir();
        std::fs::create_dir_all(&dir).map_err(|e| {
            RunError::Transient(format!(
                "{}: cannot create the output folder: {e}",
                dir.display()
            ))
        })?;
        let writer = WriterOptions::default();
        let file_id = rttm_file_id(&job.input);
        formats
            .into_iter()
            .map(|f| {
                let path = output_path(&dir, &job.input, f.extension());
                let text = writers::write_named(f, &transcript, &writer, &file_id);
                ctx.write(&path, text.as_bytes())
            })
            .collect()
    }
}
