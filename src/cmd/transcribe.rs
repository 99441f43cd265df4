//! `atelier transcribe FILES…`: openai-whisper's CLI, with the model loaded once.
use super::usage;
use crate::cli::{TaskArg, TranscribeArgs};
use crate::config::{DeviceChoice, Loaded};
use crate::engine::speaker::{DiarizeOptions, SpeakerCount};
use crate::engine::whisper::job::{self, JobMsg, SpeakerJob};
use crate::engine::whisper::tokenizer::to_language_code;
use crate::engine::whisper::{DecodeOptions, Event, Task, TranscribeOptions};
use crate::engine::{runtime, store, CancelToken, DeviceThread};
use crate::media::audio::stream_file;
use crate::output::atomic::output_path;
use crate::output::registry::OutputRegistry;
use crate::output::writers::{self, format_timestamp, Format, WriterOptions};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc;

/// openai's `np.arange(temperature, 1.0 + 1e-6, increment)`.
fn temperatures(start: f64, increment: f64) -> Vec<f64> {
    if increment <= 0.0 {
        return vec![start];
    }
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let t = start + increment * i as f64;
        if t >= 1.0 + 1e-6 {
            break;
        }
        out.push((t * 1e6).round() / 1e6);
        i += 1;
    }
    out
}

fn parse_clips(text: &str) -> Result<Vec<(f64, f64)>, String> {
    let points: Vec<f64> = text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse::<f64>()
                .map_err(|_| format!("--clip-timestamps: '{s}' is not a number"))
        })
        .collect::<Result<_, _>>()?;
    if points.len() <= 1 && points.first().is_none_or(|&p| p == 0.0) {
        return Ok(Vec::new());
    }
    Ok(points
        .chunks(2)
        .map(|c| (c[0], c.get(1).copied().unwrap_or(f64::INFINITY)))
        .collect())
}

/// Builds the engine options from the flags (usage errors as text).
pub fn options(args: &TranscribeArgs, config_beam: u32) -> Result<TranscribeOptions, String> {
    let language = match args.language.as_deref() {
        None | Some("") => None,
        Some(l) => Some(
            to_language_code(l)
                .ok_or_else(|| format!("--language: unknown language '{l}'"))?
                .to_string(),
        ),
    };
    let suppress_tokens = args
        .suppress_tokens
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse::<i64>()
                .map_err(|_| format!("--suppress-tokens: '{s}' is not a token id"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let beam_size = args
        .beam_size
        .or(Some(config_beam as usize))
        .filter(|&b| b > 1);
    if args.best_of == 0 {
        return Err("--best-of must be at least 1".into());
    }
    Ok(TranscribeOptions {
        decode: DecodeOptions {
            task: match args.task {
                TaskArg::Transcribe => Task::Transcribe,
                TaskArg::Translate => Task::Translate,
            },
            language,
            beam_size,
            best_of: Some(args.best_of),
            patience: args.patience,
            length_penalty: args.length_penalty,
            suppress_tokens,
            ..DecodeOptions::default()
        },
        temperatures: temperatures(args.temperature, args.temperature_increment_on_fallback),
        compression_ratio_threshold: Some(args.compression_ratio_threshold),
        logprob_threshold: Some(args.logprob_threshold),
        no_speech_threshold: Some(args.no_speech_threshold),
        condition_on_previous_text: args.condition_on_previous_text,
        initial_prompt: args.initial_prompt.clone(),
        carry_initial_prompt: args.carry_initial_prompt,
        clips: parse_clips(&args.clip_timestamps)?,
        pad_clips_with_silence: false,
        batch_size: args.batch_size.max(1),
        word_timestamps: args.word_timestamps.unwrap_or(false),
        prepend_punctuations: args.prepend_punctuations.clone(),
        append_punctuations: args.append_punctuations.clone(),
        hallucination_silence_threshold: args.hallucination_silence_threshold,
    })
}

/// `--speakers`, `--min-speakers`, `--max-speakers`, `--speaker-names` (usage errors as text).
pub fn diarize_options(args: &TranscribeArgs) -> Result<DiarizeOptions, String> {
    let d = SpeakerCount::default();
    let count = SpeakerCount {
        exact: args.speakers,
        min: args.min_speakers.unwrap_or(d.min),
        max: args.max_speakers.unwrap_or(d.max),
    };
    if count.exact == Some(0) {
        return Err("--speakers must be at least 1".into());
    }
    if count.min == 0 {
        return Err("--min-speakers must be at least 1".into());
    }
    if count.min > count.max {
        return Err(format!(
            "--min-speakers {} is more than --max-speakers {}",
            count.min, count.max
        ));
    }
    let names: Vec<String> = args
        .speaker_names
        .as_deref()
        .map(|n| n.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default();
    if names.iter().any(String::is_empty) {
        return Err("--speaker-names: a name is empty (give them as \"Alice,Bob\")".into());
    }
    let given = args.speakers.is_some()
        || args.min_speakers.is_some()
        || args.max_speakers.is_some()
        || args.speaker_names.is_some();
    if given && !args.diarize {
        return Err(
            "--speakers, --min-speakers, --max-speakers and --speaker-names need --diarize".into(),
        );
    }
    Ok(DiarizeOptions { count, names })
}

pub fn run(
    loaded: &Loaded,
    args: TranscribeArgs,
    device: DeviceChoice,
    models_dir: &Path,
) -> ExitCode {
    let wcfg = &loaded.config.whisper;
    let formats = match Format::parse(&args.output_format) {
        Ok(f) => f,
        Err(e) => return usage(format!("--output-format: {e}")),
    };
    let mut opts = match options(&args, wcfg.beam_size) {
        Ok(o) => o,
        Err(e) => return usage(e),
    };
    opts.word_timestamps = args.word_timestamps.unwrap_or(wcfg.word_timestamps);
    let diarize = match diarize_options(&args) {
        Ok(d) => d,
        Err(e) => return usage(e),
    };
    if formats.contains(&Format::Rttm) && !args.diarize {
        return usage("--output-format rttm needs --diarize");
    }
    if args.diarize {
        if args.no_vad {
            return usage("--diarize needs the VAD's speech ranges: drop --no-vad");
        }
        if !parse_clips(&args.clip_timestamps).is_ok_and(|c| c.is_empty()) {
            return usage("--diarize cannot be combined with --clip-timestamps");
        }
        // speakers are aligned to words
        opts.word_timestamps = true;
    }
    if opts.word_timestamps && opts.decode.task == Task::Translate {
        eprintln!("warning: word-level timestamps on translations may not be reliable");
    }
    if args.language.is_none() && !wcfg.language.is_empty() {
        opts.decode.language = to_language_code(&wcfg.language).map(str::to_string);
    }
    let writer_options = WriterOptions {
        max_line_width: args.max_line_width,
        max_line_count: args.max_line_count,
        highlight_words: args.highlight_words,
        max_words_per_line: args.max_words_per_line,
    };
    let use_vad = if args.no_vad {
        false
    } else {
        args.vad || wcfg.vad || args.diarize
    } && opts.clips.is_empty();
    if let Some(n) = args.threads {
        runtime::set_threads(n);
    }
    let device = match runtime::resolve_device(device) {
        Ok(d) => d,
        Err(e) => return usage(e),
    };
    let model_name = args.model.clone().unwrap_or_else(|| wcfg.model.clone());
    let model = match store::find(models_dir, &model_name, "whisper") {
        Ok(m) => m,
        Err(e) => {
            return super::fail(e);
        }
    };
    let vad_model = if use_vad {
        match store::find(models_dir, &wcfg.vad_model, "vad") {
            Ok(m) => Some(m),
            Err(e) => {
                eprintln!("error: {e}; VAD is on by default: install it (tools/dev.sh demo) or pass --no-vad");
                return super::exit(super::EXIT_FAILURE);
            }
        }
    } else {
        None
    };
    let speaker_model = if args.diarize {
        match store::find(models_dir, &args.speaker_model, "speaker") {
            Ok(m) => Some(m),
            Err(e) => {
                eprintln!("error: {e}; {}", crate::engine::speaker::MISSING_MODEL_HINT);
                return super::exit(super::EXIT_FAILURE);
            }
        }
    } else {
        None
    };
    if let Err(e) = std::fs::create_dir_all(&args.output_dir) {
        eprintln!(
            "error: {}: cannot create the output folder: {e}",
            args.output_dir.display()
        );
        return super::exit(super::EXIT_FAILURE);
    }
    let thread = match DeviceThread::spawn(device) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot start the model thread: {e}");
            return super::exit(super::EXIT_FAILURE);
        }
    };
    if let Err(e) = job::preload(&thread, model.clone(), vad_model.clone()) {
        return super::fail(e);
    }
    let speakers = speaker_model.map(|model| SpeakerJob {
        model,
        options: diarize.clone(),
    });
    if let Some(s) = &speakers {
        if let Err(e) = job::preload_speaker(&thread, s.model.clone()) {
            return super::fail(e);
        }
    }

    let interactive = std::io::stderr().is_terminal();
    let registry = OutputRegistry::open_default();
    let mut failed = 0;
    for path in &args.files {
        let audio = stream_file(path, 30.0, |e| e.to_string());
        match transcribe_one(
            &thread,
            &model,
            vad_model.clone(),
            speakers.clone(),
            path,
            audio,
            &opts,
            &args,
            interactive,
        ) {
            Ok(transcript) => {
                if args.json {
                    // openai's JSON (one line per file, the input first) on stdout; the
                    // files are written too.
                    let body = writers::write(writers::Format::Json, &transcript, &writer_options);
                    println!("{}", json_line(path, body.trim_end()));
                }
                let ok = write_outputs(
                    registry.as_ref(),
                    &args,
                    path,
                    &formats,
                    &transcript,
                    &writer_options,
                );
                if !ok {
                    failed += 1;
                }
            }
            Err(e) => {
                // Audio errors already start with the file's name.
                if e.starts_with(&path.display().to_string()) {
                    eprintln!("error: {e}");
                } else {
                    eprintln!("error: {}: {e}", path.display());
                }
                failed += 1;
            }
        }
    }
    if failed > 0 {
        super::exit(super::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    }
}

/// Writes the transcript's files, saying so when one took another name (a file at its name
/// that is not our unchanged output of this input is kept). False on an error (reported).
fn write_outputs(
    registry: Option<&OutputRegistry>,
    args: &TranscribeArgs,
    path: &Path,
    formats: &[writers::Format],
    transcript: &crate::transcript::Transcript,
    options: &writers::WriterOptions,
) -> bool {
    match writers::write_files(
        registry,
        &args.output_dir,
        path,
        formats,
        transcript,
        options,
    ) {
        Ok(written) => {
            for (w, format) in written.iter().zip(formats) {
                let wanted = output_path(&args.output_dir, path, format.extension());
                if *w != wanted {
                    eprintln!(
                        "note: {} is not Atelier's transcript of {}: kept; wrote {}",
                        wanted.display(),
                        path.display(),
                        w.display()
                    );
                }
                tracing::info!("wrote {}", w.display());
            }
            true
        }
        Err(e) => {
            eprintln!(
                "error: {}: cannot write the outputs to {}: {e}",
                path.display(),
                args.output_dir.display()
            );
            false
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn transcribe_one(
    thread: &DeviceThread,
    model: &store::InstalledModel,
    vad: Option<store::InstalledModel>,
    speakers: Option<SpeakerJob>,
    path: &Path,
    audio: mpsc::Receiver<job::AudioChunk>,
    opts: &TranscribeOptions,
    args: &TranscribeArgs,
    interactive: bool,
) -> Result<crate::transcript::Transcript, String> {
    let bar = interactive.then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {percent}% {elapsed}<{eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        bar
    });
    let rx = job::submit_diarized(
        thread,
        model.clone(),
        vad,
        audio,
        opts.clone(),
        CancelToken::new(),
        speakers,
    );
    let mut stdout = std::io::stdout().lock();
    for msg in rx {
        match msg {
            JobMsg::Event(Event::Language { code, probability }) => {
                let name = crate::engine::whisper::tokenizer::LANGUAGES
                    .iter()
                    .find(|(c, _)| *c == code)
                    .map_or(code.as_str(), |(_, n)| n);
                let mut title = name.to_string();
                if let Some(first) = title.get(0..1) {
                    title.replace_range(0..1, &first.to_uppercase());
                }
                let line = format!("Detected language: {title} ({probability:.2})");
                match &bar {
                    Some(b) => b.println(line),
                    None => eprintln!("{line}"),
                }
            }
            JobMsg::Event(Event::Segment(seg)) if args.verbose && !args.json => {
                let line = format!(
                    "[{} --> {}] {}",
                    format_timestamp(seg.start, false, "."),
                    format_timestamp(seg.end, false, "."),
                    seg.text
                );
                match &bar {
                    Some(b) => b.suspend(|| {
                        let _ = writeln!(stdout, "{line}");
                    }),
                    None => {
                        let _ = writeln!(stdout, "{line}");
                    }
                }
            }
            JobMsg::Event(Event::Segment(_)) => {}
            JobMsg::Event(Event::Warning(w)) => {
                let line = format!("warning: {}: {w}", path.display());
                match &bar {
                    Some(b) => b.println(line),
                    None => eprintln!("{line}"),
                }
            }
            JobMsg::Event(Event::Progress {
                done_seconds,
                total_seconds,
            }) => {
                if let Some(b) = &bar {
                    b.set_length((total_seconds * 100.0) as u64);
                    b.set_position((done_seconds * 100.0) as u64);
                }
            }
            JobMsg::Speech { seconds, ranges } => {
                tracing::info!(
                    "{}: VAD found {seconds:.1} s of speech in {ranges} ranges",
                    path.display()
                );
            }
            JobMsg::Done(result) => {
                if let Some(b) = &bar {
                    b.finish_and_clear();
                }
                return result;
            }
        }
    }
    Err("the model thread stopped".into())
}

/// One `transcribe --json` line: `{"input": PATH, …openai's fields}` (docs/json.md).
fn json_line(input: &Path, body: &str) -> String {
    let input = serde_json::to_string(&input.to_string_lossy()).unwrap_or_default();
    match body.strip_prefix('{') {
        Some(rest) if rest.trim_start().starts_with('}') => format!("{{\"input\":{input}}}"),
        Some(rest) => format!("{{\"input\":{input},{rest}"),
        None => body.to_string(),
    }
}
