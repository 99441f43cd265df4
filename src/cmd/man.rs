//! `atelier man [DIR]` (hidden): man pages from the clap definitions (clap_mangen), so they
//! never drift from `--help`. `tools/dev.sh install` writes them into PREFIX/share/man/man1.
use std::path::Path;
use std::process::ExitCode;

pub fn run(cmd: clap::Command, dir: Option<&Path>) -> ExitCode {
    let result = match dir {
        None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout()),
        Some(dir) => std::fs::create_dir_all(dir).and_then(|()| write_all(cmd, dir)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let place = dir.map_or("stdout".to_string(), |d| d.display().to_string());
            eprintln!("error: {place}: cannot write the man pages: {e}");
            super::exit(super::EXIT_FAILURE)
        }
    }
}

/// atelier.1, and atelier-SUB.1 for each visible subcommand (atelier-models-import.1 …).
fn write_all(cmd: clap::Command, dir: &Path) -> std::io::Result<()> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    write_page(&cmd, "atelier", dir)
}

fn write_page(cmd: &clap::Command, name: &str, dir: &Path) -> std::io::Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .title(name.to_string())
        .render(&mut page)?;
    crate::output::atomic::write_atomic(&dir.join(format!("{name}.1")), &page)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_page(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(())
}
