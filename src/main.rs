use atelier::cli::{Cli, Command, ConfigCommand, ModelsCommand};
use atelier::config::{self, DeviceChoice};
use atelier::engine::{runtime, store};
use atelier::{cmd, logging};
use clap::{CommandFactory, Parser};
use std::process::ExitCode;

fn main() -> ExitCode {
    // `atelier doctor | head`: a closed pipe ends the process quietly, as for other tools.
    // SAFETY: restoring a signal's default action before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    atelier::engine::runtime::keep_freed_memory();
    let cli = Cli::parse();
    let loaded = config::load(cli.config.as_deref(), cli.theme.as_deref());
    let _log = logging::init(&loaded.config.log_level);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "start");
    // A headless command does not run on the presets behind a broken config.toml: `watch` would
    // silently watch other folders with other settings. The TUI shows the error and goes on;
    // doctor and `config check|print` report it themselves.
    let reports_itself = matches!(
        cli.command,
        None | Some(Command::Doctor { .. })
            | Some(Command::Config(_))
            | Some(Command::Completions { .. })
            | Some(Command::Man { .. })
    );
    if let (Some(e), false) = (&loaded.config_error, reports_itself) {
        eprintln!("error: {e}");
        eprintln!("(fix the file; `atelier config check` lists every problem)");
        return cmd::exit(cmd::EXIT_USAGE);
    }

    let device_text = cli
        .device
        .clone()
        .unwrap_or_else(|| loaded.config.device.clone());
    let device: DeviceChoice = match device_text.parse() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: --device: {e}");
            return cmd::exit(cmd::EXIT_USAGE);
        }
    };
    // `cuda:N` hides the other GPUs before CUDA starts (doctor lists them all).
    if !matches!(cli.command, Some(Command::Doctor { .. })) {
        if let Err(e) = runtime::pin_gpu(device) {
            eprintln!("error: --device {device}: {e}");
            return cmd::exit(cmd::EXIT_USAGE);
        }
    }
    runtime::init();
    let models_dir = store::models_dir(&loaded.config.models_dir);

    match cli.command {
        Some(Command::Doctor { json }) => cmd::doctor::run(&loaded, device, json),
        Some(Command::Models(ModelsCommand::List { json })) => cmd::models::list(&models_dir, json),
        Some(Command::Models(ModelsCommand::Verify { names, json })) => {
            cmd::models::verify(&models_dir, &names, json)
        }
        Some(Command::Models(ModelsCommand::Info { name, json })) => {
            cmd::models::info(&models_dir, &name, json)
        }
        Some(Command::Models(ModelsCommand::Remove { name, json })) => {
            cmd::models::remove(&models_dir, &name, json)
        }
        Some(Command::Models(ModelsCommand::Import(args))) => {
            let target = match runtime::resolve_device(device) {
                Ok(d) if d.is_cuda() => "cuda",
                _ => "cpu",
            };
            cmd::models::import(&loaded, &models_dir, &args, target)
        }
        Some(Command::Config(ConfigCommand::Check)) => cmd::config::check(cli.config.as_deref()),
        Some(Command::Config(ConfigCommand::Print)) => cmd::config::print(&loaded),
        Some(Command::Transcribe(args)) => {
            cmd::transcribe::run(&loaded, *args, device, &models_dir)
        }
        Some(Command::Tag(args)) => cmd::clip::tag(&loaded, args, device, &models_dir),
        Some(Command::Index(args)) => cmd::clip::index(&loaded, args, device, &models_dir),
        Some(Command::Search(args)) => cmd::clip::search(&loaded, args, device, &models_dir),
        Some(Command::Similar(args)) => cmd::clip::similar(&loaded, args, device, &models_dir),
        Some(Command::Moderate(args)) => cmd::clip::moderate(&loaded, args, device, &models_dir),
        Some(Command::Embed(args)) => cmd::clip::embed(&loaded, args, device, &models_dir),
        Some(Command::Watch(args)) => cmd::watch::run(&loaded, *args, device, &models_dir),
        Some(Command::Queue(command)) => cmd::queue::run(&loaded, command),
        Some(Command::Generate(args)) => cmd::generate::run(&loaded, *args, device, &models_dir),
        Some(Command::Man { dir }) => cmd::man::run(Cli::command(), dir.as_deref()),
        Some(Command::Completions { shell }) => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "atelier",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        None => {
            let label = match runtime::resolve_device(device) {
                Ok(d) => format!("{d:?}").to_uppercase(),
                Err(e) => {
                    eprintln!("error: {e}");
                    return cmd::exit(cmd::EXIT_USAGE);
                }
            };
            match atelier::app::run(loaded, cli.dirs, label, device) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    cmd::exit(cmd::EXIT_FAILURE)
                }
            }
        }
    }
}
