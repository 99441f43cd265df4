//! Config layering, the invalid-config corpus, keymaps and themes.
use atelier::config::{self, parse_key, KeySection, Keymap, StyleName, Theme, THEME_PRESETS};
use crossterm::event::{KeyCode, KeyModifiers};
use std::path::{Path, PathBuf};

#[test]
fn presets_parse_and_validate() {
    let preset = config::preset_config();
    assert_eq!(preset.theme, "dark");
    assert_eq!(preset.device, "auto");
    // The preset merged with an empty user file is the preset.
    let merged = config::config_from_user(Path::new("empty.toml"), "").unwrap();
    assert_eq!(merged, preset);
    assert!(!Keymap::preset().sections.is_empty());
}

#[test]
fn user_values_merge_over_presets_table_by_table() {
    let user = "theme = \"light\"\n[ui]\nmouse = false\n[whisper]\nlanguage = \"de\"\n";
    let c = config::config_from_user(Path::new("user.toml"), user).unwrap();
    let preset = config::preset_config();
    assert_eq!(c.theme, "light");
    assert!(!c.ui.mouse);
    // Keys the user did not set inside a table they did set keep their preset value.
    assert_eq!(c.ui.max_fps, preset.ui.max_fps);
    assert_eq!(c.ui.image_protocol, preset.ui.image_protocol);
    assert_eq!(c.whisper.language, "de");
    assert_eq!(c.whisper.model, preset.whisper.model);
}

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid_configs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

fn check_file(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).unwrap();
    let name = path.file_name().unwrap().to_str().unwrap();
    if name.starts_with("keymap-") {
        Keymap::with_user(path, &text)
            .map(|_| ())
            .map_err(|e| e.to_string())
    } else if name.starts_with("theme-") {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mine.toml"), &text).unwrap();
        Theme::load("mine", Some(dir.path()))
            .map(|_| ())
            .map_err(|e| e.to_string())
    } else {
        config::config_from_user(path, &text)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

#[test]
fn every_invalid_config_is_rejected_with_a_clear_message() {
    let files = corpus();
    assert!(files.len() >= 15, "corpus is missing");
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: first line must be `# expect: …`", path.display()));
        let err = match check_file(&path) {
            Ok(()) => panic!("{} was accepted", path.display()),
            Err(e) => e,
        };
        assert!(
            err.contains(expect),
            "{}: error does not mention {expect:?}:\n{err}",
            path.display()
        );
        let stem = path.file_stem().unwrap().to_str().unwrap();
        let named = err.contains(path.to_str().unwrap()) || err.contains("mine.toml");
        assert!(named, "{stem}: error does not name the file:\n{err}");
    }
}

#[test]
fn unknown_key_error_points_at_its_line() {
    let text = "theme = \"dark\"\n\n[ui]\nmouse = true\nimage-protcol = \"kitty\"\n";
    let err = config::config_from_user(Path::new("u.toml"), text)
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 5"), "{err}");
    assert!(err.contains("image-protcol"), "{err}");
}

fn atelier(config_home: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_atelier"));
    cmd.env("ATELIER_CONFIG_DIR", config_home)
        .env("XDG_STATE_HOME", config_home.join("state"))
        .env("ATELIER_MODELS", config_home.join("models"));
    cmd
}

#[test]
fn broken_user_file_falls_back_to_presets_and_check_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        "theme = \"light\"\nbogus = 1\n",
    )
    .unwrap();
    let out = atelier(dir.path())
        .args(["config", "print"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("theme = \"dark\""),
        "presets were not used:\n{stdout}"
    );
    assert!(
        stderr.contains("config.toml") && stderr.contains("bogus"),
        "{stderr}"
    );

    let out = atelier(dir.path())
        .args(["config", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"));

    std::fs::write(dir.path().join("config.toml"), "theme = \"light\"\n").unwrap();
    let out = atelier(dir.path())
        .args(["config", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = atelier(dir.path())
        .args(["config", "print"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("theme = \"light\""));
}

#[test]
fn bad_device_flag_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = atelier(dir.path())
        .args(["--device", "tpu", "models", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown device 'tpu'"));
}

#[test]
fn keys_parse() {
    let k = parse_key("ctrl-d").unwrap();
    assert_eq!(
        (k.code, k.modifiers),
        (KeyCode::Char('d'), KeyModifiers::CONTROL)
    );
    assert_eq!(parse_key("space").unwrap().code, KeyCode::Char(' '));
    assert_eq!(parse_key("f12").unwrap().code, KeyCode::F(12));
    assert_eq!(parse_key("G").unwrap().code, KeyCode::Char('G'));
    assert!(parse_key("f99").is_err());
    assert!(parse_key("hyper-x").is_err());
    for text in ["ctrl-d", "space", "f5", "pagedown", "backtab", "alt-x"] {
        assert_eq!(parse_key(text).unwrap().to_string(), text);
    }
}

#[test]
fn user_keymap_overrides_and_unbinds() {
    let user = "[global]\n\"x\" = \"quit\"\n\"q\" = \"none\"\n";
    let k = Keymap::with_user(Path::new("keymap.toml"), user).unwrap();
    assert_eq!(
        k.action(KeySection::Global, parse_key("x").unwrap()),
        Some("quit")
    );
    assert_eq!(k.action(KeySection::Global, parse_key("q").unwrap()), None);
    // Preset keys the user did not touch remain, and sections fall back to global.
    assert_eq!(
        k.action(KeySection::List, parse_key("?").unwrap()),
        Some("help")
    );
    assert_eq!(
        k.action(KeySection::List, parse_key("j").unwrap()),
        Some("down")
    );
}

#[test]
fn every_preset_theme_loads_and_defines_the_core_styles() {
    for (name, _) in THEME_PRESETS {
        let theme = Theme::load(name, None).unwrap();
        for key in [
            StyleName::Text,
            StyleName::BorderFocused,
            StyleName::Selection,
            StyleName::Error,
            StyleName::Status,
        ] {
            assert_ne!(theme.get(key), Default::default(), "{name}: {key}");
        }
    }
}

#[test]
fn theme_inheritance_and_fallback() {
    use ratatui::style::Color;
    let dark = Theme::load("dark", None).unwrap();
    let light = Theme::load("light", None).unwrap();
    // light overrides the palette, so styles it inherits from dark use light's colours.
    assert_eq!(
        light.get(StyleName::Error).fg,
        Some(Color::Rgb(0xcf, 0x22, 0x2e))
    );
    assert_eq!(
        dark.get(StyleName::Error).fg,
        Some(Color::Rgb(0xf4, 0x70, 0x67))
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mine.toml"),
        "inherits = \"high-contrast\"\n[palette]\nred = \"#010203\"\n",
    )
    .unwrap();
    let mine = Theme::load("mine", Some(dir.path())).unwrap();
    assert_eq!(mine.get(StyleName::Error).fg, Some(Color::Rgb(1, 2, 3)));
    assert_eq!(
        mine.get(StyleName::Selection),
        Theme::load("high-contrast", None)
            .unwrap()
            .get(StyleName::Selection)
    );
}

#[test]
fn a_style_the_theme_does_not_set_falls_back_to_its_parent_then_text() {
    use ratatui::style::Color;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bare.toml"),
        "[styles]\ntext = { fg = \"#010101\" }\nborder = { fg = \"#020202\" }\n",
    )
    .unwrap();
    let bare = Theme::load("bare", Some(dir.path())).unwrap();
    assert_eq!(
        bare.get(StyleName::BorderFocused).fg,
        Some(Color::Rgb(2, 2, 2))
    );
    assert_eq!(bare.get(StyleName::StatusKey).fg, Some(Color::Rgb(1, 1, 1)));
    assert_eq!(bare.get(StyleName::Muted).fg, Some(Color::Rgb(1, 1, 1)));
    // Every name the enum has is one the preset themes can set.
    for name in StyleName::ALL {
        assert_eq!(StyleName::parse(name.name()), Some(name));
    }
}

#[test]
fn keymap_sections_are_the_panes_and_list_and_global() {
    let preset = Keymap::preset();
    let sections: Vec<KeySection> = preset.sections.keys().copied().collect();
    assert_eq!(sections, KeySection::ALL.to_vec());
    let err = Keymap::with_user(Path::new("keymap.toml"), "[tag]\n\"x\" = \"quit\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("keymap.toml") && err.contains("unknown section [tag]"),
        "{err}"
    );
}

#[test]
fn theme_inheritance_loops_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.toml"), "inherits = \"b\"\n").unwrap();
    std::fs::write(dir.path().join("b.toml"), "inherits = \"a\"\n").unwrap();
    let err = Theme::load("a", Some(dir.path())).unwrap_err().to_string();
    assert!(err.contains("loop"), "{err}");
}

/// Runs `cmd` to its end; a process that is still running after a minute (a headless command
/// that ignored the broken config and started working) is killed and reported.
fn finish(mut cmd: std::process::Command) -> std::process::Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..600 {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    panic!(
        "still running on a broken config:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn headless_commands_refuse_a_broken_config() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[queue]\nretry-backoff-ms = 99999999999\n").unwrap();
    let data = dir.path().join("data");
    let journal = data.join("atelier/queue.sqlite");
    for args in [
        vec!["watch", inbox.to_str().unwrap()],
        vec!["queue", "list"],
        vec!["models", "list"],
    ] {
        let mut cmd = atelier(dir.path());
        cmd.env("XDG_DATA_HOME", &data)
            .arg("--config")
            .arg(&bad)
            .args(&args);
        let out = finish(cmd);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("bad.toml") && stderr.contains("queue.retry-backoff-ms"),
            "{args:?}: the error does not name the file and the key:\n{stderr}"
        );
    }
    assert!(!journal.exists(), "a command ran on the presets");
    // `config print` still shows what the presets would be, with a warning.
    let mut cmd = atelier(dir.path());
    cmd.arg("--config").arg(&bad).args(["config", "print"]);
    let out = finish(cmd);
    assert_eq!(out.status.code(), Some(0));
}

/// `~` in a path key is the home folder, as in a shell: `output-dir = "~/img"` once made a
/// literal `./~` folder.
#[test]
fn a_tilde_in_any_path_key_is_the_home_folder() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        "models-dir = \"~/m\"\n[clip]\nindex = \"~/idx.sqlite\"\n[diffusion]\noutput-dir = \"~/img\"\n\
         lora-dir = \"~\"\n[[watch]]\nname = \"talks\"\npath = \"~/inbox\"\nkind = \"transcribe\"\n\
         done-dir = \"~/done\"\n",
    )
    .unwrap();
    let mut cmd = atelier(dir.path());
    cmd.env("HOME", &home).args(["config", "print"]);
    let o = finish(cmd);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let h = home.display();
    for want in [
        format!("models-dir = \"{h}/m\""),
        format!("index = \"{h}/idx.sqlite\""),
        format!("output-dir = \"{h}/img\""),
        format!("lora-dir = \"{h}\""),
        format!("path = \"{h}/inbox\""),
        format!("done-dir = \"{h}/done\""),
    ] {
        assert!(out.contains(&want), "{want} not in:\n{out}");
    }
    assert!(!out.contains("\"~"), "an unexpanded ~ is left:\n{out}");
}
