//! Command-line definitions. Flags are named like the tools users already know.
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "atelier",
    version,
    about = "A terminal media workstation: Whisper, CLIP and Stable Diffusion on libtorch"
)]
// Global flags go before or after the subcommand (`atelier --device cuda doctor`); a first
// word that is not a subcommand opens the TUI on that folder.
pub struct Cli {
    /// Device: auto, cpu, cuda or cuda:N (overrides `device` in config.toml)
    #[arg(long, global = true, value_name = "DEVICE")]
    pub device: Option<String>,
    /// Use this config file instead of ~/.config/atelier/config.toml
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Colour theme (overrides `theme` in config.toml)
    #[arg(long, global = true, value_name = "NAME")]
    pub theme: Option<String>,

    #[command(subcommand)]
    pub command: Option<Command>,

    /// Folders to open in the TUI
    #[arg(value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check libtorch, devices, models, config, terminal and audio
    Doctor {
        /// One JSON object (docs/models.md lists its fields)
        #[arg(long)]
        json: bool,
    },
    /// List, verify and import models
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Check or print the configuration
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Transcribe or translate audio and video files with Whisper
    Transcribe(Box<TranscribeArgs>),
    /// Tag images with CLIP zero-shot labels (a label set or --label texts)
    Tag(TagArgs),
    /// Build or update the CLIP embedding index of folders
    Index(IndexArgs),
    /// Search the index by text
    Search(SearchArgs),
    /// Find indexed images similar to an image
    Similar(SimilarArgs),
    /// Flag images against the safety categories of the `moderation` label set
    Moderate(ModerateArgs),
    /// Print normalized CLIP embeddings of images or texts as JSON
    Embed(EmbedArgs),
    /// Watch folders and run jobs on the files dropped there (headless, for SSH and systemd)
    Watch(Box<WatchArgs>),
    /// Inspect and manage the job journal
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Generate images with Stable Diffusion (txt2img, img2img, inpainting, ControlNet, LoRA)
    Generate(Box<GenerateArgs>),
    /// Write man pages (atelier.1 and one per subcommand) into DIR, or atelier.1 to stdout
    #[command(hide = true)]
    Man {
        /// The folder (e.g. PREFIX/share/man/man1)
        dir: Option<PathBuf>,
    },
    /// Print shell completions
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Show the installed models
    List {
        /// One JSON object per model
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every file and load every TorchScript module
    Verify {
        /// Models to verify (all when empty)
        names: Vec<String>,
        /// One JSON object per model (docs/models.md)
        #[arg(long)]
        json: bool,
    },
    /// Show a model's files, sizes, hashes, device/dtype, export version and source
    Info {
        /// The model (any name it answers to: tiny.en, ViT-B-32, openai/whisper-base, …)
        name: String,
        /// One JSON object (docs/models.md)
        #[arg(long)]
        json: bool,
    },
    /// Delete a model folder from the store
    Remove {
        /// The model's name in the store (as `atelier models list` shows it)
        name: String,
        /// One JSON object describing what was removed
        #[arg(long)]
        json: bool,
    },
    /// Convert and export a model from files on disk into the store (the family is detected
    /// from the files when not given)
    Import(ImportArgs),
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// An optional family (whisper, clip, vad, speaker, sd, controlnet, lora), then the file or folder
    /// to import: a CTranslate2 folder, an openai .pt, a transformers, diffusers or open_clip
    /// folder, an SD/SDXL, open_clip or LoRA .safetensors, the silero-vad or resemblyzer wheel, or a Hugging
    /// Face cache folder (models--ORG--NAME)
    #[arg(value_name = "[FAMILY] PATH", num_args = 1..=2, required = true)]
    pub args: Vec<PathBuf>,
    /// Name of the model in the store (default: derived from the source)
    #[arg(long)]
    pub name: Option<String>,
    /// Source format: auto, ct2, openai, hf (Whisper); auto, hf, open_clip, openai (CLIP)
    #[arg(long, default_value = "auto")]
    pub format: String,
    /// CLIP: the open_clip architecture of a checkpoint (e.g. ViT-B-32, ViT-L-14, RN50);
    /// SD single files: the built-in config (sd15, sd15-inpaint, sd21, sdxl) or a diffusers
    /// folder of the same architecture (default: detected from the file's keys)
    #[arg(long)]
    pub arch: Option<String>,
    /// Data type of the export: float32, or float16 (CUDA only)
    #[arg(long, default_value = "float32")]
    pub dtype: String,
    /// Whisper on the CPU: int8 quantizes every Linear layer (dynamic int8, like
    /// faster-whisper's compute_type int8): faster on the CPU, slightly different words
    #[arg(long, value_parser = ["int8"])]
    pub quantize: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the user's config, keymap and theme files
    Check,
    /// Print the effective configuration (presets with the user's files merged over them)
    Print,
}

/// openai-whisper's boolean style: True/False, also true/false/1/0/yes/no.
fn str2bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("expected True or False, got '{s}'")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TaskArg {
    Transcribe,
    Translate,
}

/// Flags follow openai-whisper's CLI in kebab-case; its underscore spellings work too.
#[derive(Debug, Args)]
pub struct TranscribeArgs {
    /// Audio or video files
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Model name in the store (default: whisper.model in config.toml)
    #[arg(long)]
    pub model: Option<String>,
    /// Spoken language (code or name); detected from the first 30 s when not given
    #[arg(long)]
    pub language: Option<String>,
    /// transcribe, or translate to English
    #[arg(long, value_enum, default_value = "transcribe")]
    pub task: TaskArg,
    /// Sampling temperature (0: greedy or beam search)
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Temperature step of the fallback when decoding fails the thresholds (0: no fallback)
    #[arg(
        long,
        alias = "temperature_increment_on_fallback",
        default_value_t = 0.2
    )]
    pub temperature_increment_on_fallback: f64,
    /// Candidates when sampling with non-zero temperature
    #[arg(long, alias = "best_of", default_value_t = 5)]
    pub best_of: usize,
    /// Beams in beam search at temperature 0 (1: greedy)
    #[arg(long, alias = "beam_size")]
    pub beam_size: Option<usize>,
    /// Beam search patience (openai's; 1.0 is conventional beam search)
    #[arg(long)]
    pub patience: Option<f64>,
    /// Length penalty alpha (default: simple length normalisation)
    #[arg(long, alias = "length_penalty")]
    pub length_penalty: Option<f64>,
    /// Comma-separated token ids to suppress; -1 suppresses most special characters
    #[arg(
        long,
        alias = "suppress_tokens",
        default_value = "-1",
        allow_hyphen_values = true
    )]
    pub suppress_tokens: String,
    /// Text to provide as a prompt for the first window
    #[arg(long, alias = "initial_prompt")]
    pub initial_prompt: Option<String>,
    /// Keep the initial prompt in every window's prompt
    #[arg(long, alias = "carry_initial_prompt", num_args = 0..=1, default_missing_value = "true", value_parser = str2bool, default_value = "false")]
    pub carry_initial_prompt: bool,
    /// Give the previous output as the prompt for the next window
    #[arg(long, alias = "condition_on_previous_text", num_args = 0..=1, default_missing_value = "true", value_parser = str2bool, default_value = "true")]
    pub condition_on_previous_text: bool,
    /// Fall back to sampling when the gzip compression ratio is above this
    #[arg(long, alias = "compression_ratio_threshold", default_value_t = 2.4)]
    pub compression_ratio_threshold: f64,
    /// Fall back to sampling when the average log probability is below this
    #[arg(long, alias = "logprob_threshold", default_value_t = -1.0, allow_hyphen_values = true)]
    pub logprob_threshold: f64,
    /// Treat a window as silence when <|nospeech|> is above this and the logprob is low
    #[arg(long, alias = "no_speech_threshold", default_value_t = 0.6)]
    pub no_speech_threshold: f64,
    /// Word-level timestamps
    #[arg(long, alias = "word_timestamps", num_args = 0..=1, default_missing_value = "true", value_parser = str2bool)]
    pub word_timestamps: Option<bool>,
    /// (with word timestamps) Merge these punctuation symbols with the next word
    #[arg(
        long,
        alias = "prepend_punctuations",
        default_value = "\"'“¿([{-",
        allow_hyphen_values = true
    )]
    pub prepend_punctuations: String,
    /// (with word timestamps) Merge these punctuation symbols with the previous word
    #[arg(
        long,
        alias = "append_punctuations",
        default_value = "\"'.。,，!！?？:：”)]}、",
        allow_hyphen_values = true
    )]
    pub append_punctuations: String,
    /// (with word timestamps) Underline each word as it is spoken in srt and vtt
    #[arg(long, alias = "highlight_words", num_args = 0..=1, default_missing_value = "true", value_parser = str2bool, default_value = "false")]
    pub highlight_words: bool,
    /// (with word timestamps) Characters in a subtitle line before breaking it
    #[arg(long, alias = "max_line_width")]
    pub max_line_width: Option<usize>,
    /// (with word timestamps) Lines in a subtitle segment
    #[arg(long, alias = "max_line_count")]
    pub max_line_count: Option<usize>,
    /// (with word timestamps) Words in a subtitle segment
    #[arg(long, alias = "max_words_per_line")]
    pub max_words_per_line: Option<usize>,
    /// Skip silent periods longer than this (seconds) around a likely hallucination (needs word timestamps)
    #[arg(long, alias = "hallucination_silence_threshold")]
    pub hallucination_silence_threshold: Option<f64>,
    /// start,end,start,end,… seconds to transcribe (the last end defaults to the end of the file)
    #[arg(long, alias = "clip_timestamps", default_value = "0")]
    pub clip_timestamps: String,
    /// Folder for the output files
    #[arg(long, short = 'o', alias = "output_dir", default_value = ".")]
    pub output_dir: PathBuf,
    /// txt, vtt, srt, tsv, json, rttm (with --diarize) or all (the first five)
    #[arg(long, short = 'f', alias = "output_format", default_value = "all")]
    pub output_format: String,
    /// Tell speakers apart (who said what): every segment and word gets a speaker
    #[arg(long)]
    pub diarize: bool,
    /// With --diarize: exactly this many speakers (default: estimated)
    #[arg(long, value_name = "N", conflicts_with_all = ["min_speakers", "max_speakers"])]
    pub speakers: Option<usize>,
    /// With --diarize: at least this many speakers
    #[arg(long, value_name = "A")]
    pub min_speakers: Option<usize>,
    /// With --diarize: at most this many speakers
    #[arg(long, value_name = "B")]
    pub max_speakers: Option<usize>,
    /// With --diarize: names for the speakers in order of first appearance ("Alice,Bob")
    #[arg(long, value_name = "NAMES")]
    pub speaker_names: Option<String>,
    /// With --diarize: the speaker encoder in the model store
    #[arg(long, value_name = "NAME", default_value = crate::engine::speaker::DEFAULT_MODEL)]
    pub speaker_model: String,
    /// Skip non-speech with Silero VAD (on by default)
    #[arg(long, overrides_with = "no_vad")]
    pub vad: bool,
    /// Decode everything, silence included (openai-whisper's behaviour)
    #[arg(long = "no-vad", alias = "no_vad", overrides_with = "vad")]
    pub no_vad: bool,
    /// Decode this many VAD chunks at once (faster-whisper's batched mode; no prompt
    /// conditioning between chunks). 1: openai's sequential decoding
    #[arg(long, alias = "batch_size", default_value_t = 1)]
    pub batch_size: usize,
    /// CPU threads for libtorch (default: all cores)
    #[arg(long)]
    pub threads: Option<i32>,
    /// Print each segment as it is decoded
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = str2bool, default_value = "true")]
    pub verbose: bool,
    /// Print each file's transcript to stdout as openai's JSON (one line per file; no
    /// segment lines on stdout)
    #[arg(long)]
    pub json: bool,
}

/// Options shared by the CLIP commands.
#[derive(Debug, Clone, Args)]
pub struct ClipModelArgs {
    /// CLIP model name in the store (default: clip.model in config.toml)
    #[arg(long)]
    pub model: Option<String>,
    /// Images per model call (default: clip.batch-size in config.toml)
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// CPU threads for libtorch (default: all cores)
    #[arg(long)]
    pub threads: Option<i32>,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    /// Image files or folders (folders are searched recursively for images)
    #[arg(required = true, value_name = "IMAGE|DIR")]
    pub inputs: Vec<PathBuf>,
    /// A label set: general, scene, style, moderation, a name in ~/.config/atelier/labels, or a .toml file
    #[arg(long, conflicts_with = "label")]
    pub labels: Option<String>,
    /// A label (repeatable); prompts use --templates
    #[arg(long, value_name = "TEXT")]
    pub label: Vec<String>,
    /// Template set for --label: imagenet-80, imagenet-7, photo, plain
    #[arg(long, default_value = "imagenet-7")]
    pub templates: String,
    /// Labels to keep per image
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// Drop labels scoring below this (0..1)
    #[arg(long, default_value_t = 0.0)]
    pub threshold: f64,
    /// One JSON object per image
    #[arg(long)]
    pub json: bool,
    /// Write IMAGE.tags.json and a caption IMAGE.txt beside each image
    #[arg(long)]
    pub write_sidecar: bool,
    #[command(flatten)]
    pub clip: ClipModelArgs,
}

#[derive(Debug, Args)]
pub struct IndexArgs {
    /// Folders (or files) to index
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// The index database (default: clip.index in config.toml)
    #[arg(long)]
    pub index: Option<PathBuf>,
    /// The summary as one JSON object on stdout (docs/clip.md)
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub clip: ClipModelArgs,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// What to look for: text, or arithmetic over text and images, rclip style:
    /// `cat + ./ref.jpg - 0.5:blurry` (a `W:` prefix weights a term)
    #[arg(required = true, num_args = 1..)]
    pub query: Vec<String>,
    #[command(flatten)]
    pub results: IndexQueryArgs,
}

/// What `search` and `similar` share: the index, the model and how to show results.
#[derive(Debug, Args)]
pub struct IndexQueryArgs {
    /// Results to show
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// One JSON object per result
    #[arg(long)]
    pub json: bool,
    /// The index database (default: clip.index in config.toml)
    #[arg(long)]
    pub index: Option<PathBuf>,
    #[command(flatten)]
    pub clip: ClipModelArgs,
}

#[derive(Debug, Args)]
pub struct SimilarArgs {
    /// The example image (indexed or not)
    pub image: PathBuf,
    #[command(flatten)]
    pub results: IndexQueryArgs,
}

#[derive(Debug, Args)]
pub struct ModerateArgs {
    /// Image files or folders
    #[arg(required = true, value_name = "IMAGE|DIR")]
    pub inputs: Vec<PathBuf>,
    /// The label set with per-category thresholds
    #[arg(long, default_value = "moderation")]
    pub labels: String,
    /// One JSON object per image
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub clip: ClipModelArgs,
}

#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Image files
    #[arg(value_name = "FILE", required_unless_present = "text")]
    pub files: Vec<PathBuf>,
    /// Texts to embed (repeatable)
    #[arg(long, value_name = "T")]
    pub text: Vec<String>,
    /// JSON output (the only format)
    #[arg(long, default_value_t = true)]
    pub json: bool,
    #[command(flatten)]
    pub clip: ClipModelArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JobKindArg {
    Transcribe,
    Tag,
    Index,
    Generate,
    /// SHA-256 into NAME.sha256 (a cheap kind to try the queue with)
    Checksum,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnDoneArg {
    Keep,
    Move,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PollArg {
    Auto,
    Always,
    Never,
}

/// `atelier watch`: config profiles, or ad-hoc folders with these flags.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Folders to watch (default: every [[watch]] profile in config.toml)
    #[arg(value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Only these [[watch]] profiles (by name; repeatable)
    #[arg(long, conflicts_with = "dirs")]
    pub profile: Vec<String>,
    /// What to run on each file
    #[arg(long, value_enum, default_value = "transcribe")]
    pub kind: JobKindArg,
    /// Model name in the store (default: the kind's model in config.toml)
    #[arg(long)]
    pub model: Option<String>,
    /// transcribe: spoken language (default: detect)
    #[arg(long)]
    pub language: Option<String>,
    /// transcribe: comma-separated txt, vtt, srt, tsv, json or all
    #[arg(long, short = 'f', value_delimiter = ',')]
    pub output_format: Vec<String>,
    /// transcribe: skip Silero VAD
    #[arg(long)]
    pub no_vad: bool,
    /// transcribe: tell speakers apart (every segment and word gets a speaker; RTTM too)
    #[arg(long)]
    pub diarize: bool,
    /// With --diarize: exactly this many speakers (default: estimated)
    #[arg(long, value_name = "N", requires = "diarize", conflicts_with_all = ["min_speakers", "max_speakers"])]
    pub speakers: Option<usize>,
    /// With --diarize: at least this many speakers
    #[arg(long, value_name = "A", requires = "diarize")]
    pub min_speakers: Option<usize>,
    /// With --diarize: at most this many speakers
    #[arg(long, value_name = "B", requires = "diarize")]
    pub max_speakers: Option<usize>,
    /// tag: a label set name or .toml file
    #[arg(long)]
    pub labels: Option<String>,
    /// Write outputs into a mirror tree here instead of beside each input
    #[arg(long, short = 'o', conflicts_with = "beside")]
    pub output_dir: Option<PathBuf>,
    /// Write outputs beside each input (the default)
    #[arg(long)]
    pub beside: bool,
    /// What to do with an input once its job is done
    #[arg(long, value_enum, default_value = "keep")]
    pub on_done: OnDoneArg,
    /// With --on-done move: the folder inputs go to (default: DIR/done)
    #[arg(long)]
    pub done_dir: Option<PathBuf>,
    /// Only files matching this glob, relative to DIR (repeatable; default: the kind's extensions)
    #[arg(long)]
    pub include: Vec<String>,
    /// Skip files matching this glob (repeatable)
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Take FILE only once FILE+SUFFIX exists (marker-file mode, e.g. .ready)
    #[arg(long, value_name = "SUFFIX")]
    pub marker: Option<String>,
    /// Use the polling watcher: auto (on network filesystems), always or never
    #[arg(long, value_enum, default_value = "auto")]
    pub poll: PollArg,
    /// The job journal, a file or a postgres:// URL (default: $ATELIER_QUEUE_URL, else
    /// [queue] url, else [queue] path in config.toml)
    #[arg(long, value_name = "FILE|URL")]
    pub queue: Option<PathBuf>,
    /// Milliseconds a file's size and mtime must stay the same (default: [queue] stable-ms)
    #[arg(long)]
    pub stable_ms: Option<u64>,
    /// Jobs at once (default: [queue] workers-cpu / workers-cuda)
    #[arg(long)]
    pub workers: Option<usize>,
    /// Runs before a failing job lands in `failed` (default: [queue] max-attempts)
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// First retry's wait in milliseconds (default: [queue] retry-backoff-ms)
    #[arg(long)]
    pub retry_backoff_ms: Option<u64>,
    /// Job priority (higher first; the TUI's interactive work uses 10)
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub priority: i32,
    /// Process what is there (and what arrives meanwhile), then exit when nothing is left
    #[arg(long)]
    pub exit_when_idle: bool,
    /// Print job events as JSON lines (the default when stdout is not a terminal)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Show jobs (oldest first)
    List {
        /// Only jobs in these states: queued, running, done, failed, cancelled (repeatable)
        #[arg(long)]
        state: Vec<String>,
        /// One JSON object per job
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        journal: QueueFileArg,
    },
    /// Queue failed or cancelled jobs again (attempts reset)
    Retry {
        /// Job ids
        #[arg(required_unless_present = "failed")]
        ids: Vec<i64>,
        /// Every failed job
        #[arg(long)]
        failed: bool,
        #[command(flatten)]
        journal: QueueFileArg,
    },
    /// Cancel queued or running jobs
    Cancel {
        #[arg(required = true)]
        ids: Vec<i64>,
        #[command(flatten)]
        journal: QueueFileArg,
    },
    /// Live workers (processes running jobs from this queue, on any host) and their heartbeats
    Workers {
        /// One JSON object per worker
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        journal: QueueFileArg,
    },
    /// Delete done jobs from the journal (with --all, failed and cancelled ones too)
    ClearDone {
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        journal: QueueFileArg,
    },
}

#[derive(Debug, Args)]
pub struct QueueFileArg {
    /// The job journal, a file or a postgres:// URL (default: $ATELIER_QUEUE_URL, else
    /// [queue] url, else [queue] path in config.toml)
    #[arg(long, value_name = "FILE|URL")]
    pub queue: Option<PathBuf>,
}

/// `atelier generate`: flags named like A1111's and diffusers' parameters. Unset flags come from
/// `--from-image`, then from `[diffusion]` in config.toml.
#[derive(Debug, Default, Args)]
pub struct GenerateArgs {
    /// The prompt (A1111 syntax: (word:1.2), [word], BREAK, <lora:name:weight>)
    #[arg(value_name = "PROMPT", required_unless_present = "from_image")]
    pub prompt: Option<String>,
    /// What the image should not show
    #[arg(long, short = 'n', alias = "negative-prompt")]
    pub negative: Option<String>,
    /// Denoising steps
    #[arg(long)]
    pub steps: Option<usize>,
    /// Classifier-free guidance scale (1: no guidance)
    #[arg(long, alias = "cfg-scale")]
    pub guidance: Option<f64>,
    /// Seed (-1: random); batch item i uses seed+i
    #[arg(long, allow_hyphen_values = true)]
    pub seed: Option<i64>,
    /// Scheduler (sampler): ddim, euler, euler-a, dpmpp-2m, dpmpp-2m-karras, … or an A1111 name
    #[arg(long, alias = "sampler")]
    pub scheduler: Option<String>,
    /// Image width in pixels (a multiple of 8)
    #[arg(long, short = 'W')]
    pub width: Option<i64>,
    /// Image height in pixels (a multiple of 8)
    #[arg(long, short = 'H')]
    pub height: Option<i64>,
    /// Images per run (seeds seed, seed+1, …)
    #[arg(long, short = 'b', default_value_t = 1)]
    pub batch: usize,
    /// img2img / inpainting source image
    #[arg(long, value_name = "IMG")]
    pub init_image: Option<PathBuf>,
    /// img2img denoising strength in [0, 1] (1: ignore the image's content)
    #[arg(long, alias = "denoising-strength")]
    pub strength: Option<f64>,
    /// Inpainting mask (white: repaint, black: keep); needs --init-image
    #[arg(long, value_name = "IMG")]
    pub mask: Option<PathBuf>,
    /// ControlNet model name in the store
    #[arg(long, value_name = "NAME")]
    pub controlnet: Option<String>,
    /// ControlNet conditioning image (edges, depth, pose … already preprocessed)
    #[arg(long, value_name = "IMG")]
    pub control_image: Option<PathBuf>,
    /// ControlNet conditioning scale
    #[arg(long, default_value_t = 1.0)]
    pub control_scale: f64,
    /// Fraction of the steps at which ControlNet starts applying
    #[arg(long, default_value_t = 0.0)]
    pub control_start: f64,
    /// Fraction of the steps at which ControlNet stops applying
    #[arg(long, default_value_t = 1.0)]
    pub control_end: f64,
    /// LoRA NAME:WEIGHT (a NAME.safetensors in the LoRA folder, or a path); repeatable
    #[arg(long, value_name = "NAME:W")]
    pub lora: Vec<String>,
    /// A1111 variation seed: its noise is blended into the seed's noise
    #[arg(long)]
    pub variation_seed: Option<u64>,
    /// How much of the variation seed's noise (0..1)
    #[arg(long)]
    pub variation_strength: Option<f64>,
    /// SD model name in the store (default: diffusion.model in config.toml)
    #[arg(long)]
    pub model: Option<String>,
    /// Keep the modules on the CPU and move each to the GPU only for its stage
    #[arg(long)]
    pub offload: bool,
    /// Decode the image in overlapping tiles (large images, less memory)
    #[arg(long)]
    pub vae_tiling: bool,
    /// Output folder (default: diffusion.output-dir in config.toml)
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Show the result in the terminal
    #[arg(long)]
    pub preview: bool,
    /// Show a rough preview every N steps (with --preview)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub preview_every: usize,
    /// Reuse the generation parameters of an image (ours or A1111's PNG); flags override them
    #[arg(long, value_name = "IMG.png")]
    pub from_image: Option<PathBuf>,
    /// CPU threads for libtorch (default: all cores)
    #[arg(long)]
    pub threads: Option<i32>,
    /// One JSON object per image on stdout: path, seed and parameters (docs/diffusion.md)
    #[arg(long)]
    pub json: bool,
}
