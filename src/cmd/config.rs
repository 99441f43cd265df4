use crate::config::{self, Theme};
use crate::state::{action_description, ACTIONS};
use std::path::Path;
use std::process::ExitCode;

pub fn check(config_file: Option<&Path>) -> ExitCode {
    let (checked, errors) = config::check(config_file);
    for path in &checked {
        println!("ok      {}", path.display());
    }
    if checked.is_empty() && errors.is_empty() {
        println!("no user configuration files: the presets are in use");
    }
    for e in &errors {
        eprintln!("error   {e}");
    }
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        super::exit(super::EXIT_USAGE)
    }
}

pub fn print(loaded: &config::Loaded) -> ExitCode {
    for e in &loaded.errors {
        eprintln!("warning: {e} (using the presets for that file)");
    }
    println!("# Effective configuration");
    for path in &loaded.sources {
        println!("# from {}", path.display());
    }
    println!(
        "{}",
        toml::to_string_pretty(&loaded.config).unwrap_or_default()
    );
    println!("# Keymap");
    for (section, keys) in &loaded.keymap.sections {
        println!("[{section}]");
        for (key, action) in keys {
            println!(
                "{:<14} = {:<18} # {}",
                format!("\"{key}\""),
                format!("\"{action}\""),
                action_description(action).unwrap_or("unbound")
            );
        }
        println!();
    }
    println!(
        "# Themes: {}",
        Theme::available(config::config_dir().map(|d| d.join("themes")).as_deref()).join(", ")
    );
    println!(
        "# Actions: {}",
        ACTIONS
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    );
    ExitCode::SUCCESS
}
