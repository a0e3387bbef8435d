//! Where the command line's settings come from (a flag, an `ESHOST_*`
//! variable, `eshost.toml`, the default, in that order), what it says when
//! it finds no components, and its help and completions.

use crate::util::*;
use std::path::Path;
use std::process::{Command, Output};

/// `eshost` in `dir`, with none of the test's own settings inherited.
fn eshost(dir: &Path, args: &[&str]) -> Output {
    let cache = dir.join("cache");
    let mut command = Command::new(env!("CARGO_BIN_EXE_eshost"));
    for (variable, _) in std::env::vars() {
        if variable.starts_with("ESHOST_") || variable == "DATABASE_URL" {
            command.env_remove(variable);
        }
    }
    command
        .current_dir(dir)
        .env("ESHOST_CACHE_DIR", cache)
        .args(args)
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The aggregates `eshost aggregates --json` lists.
fn listed(output: &Output) -> Vec<String> {
    assert!(output.status.success(), "{}", stderr(output));
    let listing: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    listing
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_flag_beats_a_variable_which_beats_eshost_toml() {
    let dir = tempfile::tempdir().unwrap();
    let bank = dir.path().join("bank");
    std::fs::create_dir(&bank).unwrap();
    std::fs::copy(
        modules_dir().join("bank-account.wasm"),
        bank.join("bank-account.wasm"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("eshost.toml"),
        format!(
            "modules = {:?}\nguest-time-ms = 800\n",
            modules_dir().display().to_string()
        ),
    )
    .unwrap();
    // The file alone.
    let from_file = listed(&eshost(dir.path(), &["aggregates", "--json"]));
    assert!(
        from_file.contains(&"FlashSaleItem".to_string()),
        "{from_file:?}"
    );
    // A variable set outside the file wins over it.
    let mut command = Command::new(env!("CARGO_BIN_EXE_eshost"));
    let from_variable = command
        .current_dir(dir.path())
        .env("ESHOST_MODULES", &bank)
        .env("ESHOST_CACHE_DIR", dir.path().join("cache"))
        .args(["aggregates", "--json"])
        .output()
        .unwrap();
    assert_eq!(listed(&from_variable), ["BankAccount"]);
    // A flag wins over both.
    let from_flag = eshost(
        dir.path(),
        &["aggregates", "--json", "--modules", bank.to_str().unwrap()],
    );
    assert_eq!(listed(&from_flag), ["BankAccount"]);
    // --config names another file.
    let other = dir.path().join("other.toml");
    std::fs::write(
        &other,
        format!("modules = {:?}\n", bank.display().to_string()),
    )
    .unwrap();
    let named = eshost(
        dir.path(),
        &["--config", other.to_str().unwrap(), "aggregates", "--json"],
    );
    assert_eq!(listed(&named), ["BankAccount"]);
}

#[test]
fn an_unknown_setting_is_named_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("eshost.toml"), "modulez = \"m\"\n").unwrap();
    let output = eshost(dir.path(), &["aggregates"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let error = stderr(&output);
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(
        error.contains("eshost.toml: unknown setting \"modulez\""),
        "{error}"
    );
    assert!(
        error.contains("database-url"),
        "the known settings are listed: {error}"
    );
}

#[test]
fn without_components_the_error_names_the_directory_and_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let output = eshost(
        dir.path(),
        &["exec", "FlashSaleItem", "s1", "CreateFlashSale"],
    );
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let error = stderr(&output);
    let looked_in = dir
        .path()
        .join("modules")
        .canonicalize()
        .unwrap_or(dir.path().join("modules"));
    assert!(error.contains("no such modules directory"), "{error}");
    assert!(error.contains("--modules DIR"), "{error}");
    assert!(
        error.contains(&looked_in.display().to_string())
            || error.contains(&dir.path().join("modules").display().to_string()),
        "the directory is named in full: {error}"
    );
    // An empty one says so too.
    std::fs::create_dir(dir.path().join("modules")).unwrap();
    let empty = stderr(&eshost(dir.path(), &["aggregates"]));
    assert!(empty.contains("no *.wasm components"), "{empty}");
}

#[test]
fn a_subcommands_help_shows_its_own_options_first_and_serve_has_no_client_flag() {
    let dir = tempfile::tempdir().unwrap();
    let help = String::from_utf8(eshost(dir.path(), &["exec", "--help"]).stdout).unwrap();
    let own = help.find("--command-id").expect("exec's own option");
    let global = help
        .find("Global options:")
        .expect("the global options, apart");
    assert!(own < global, "{help}");
    assert!(help.find("--database-url").unwrap() > global, "{help}");
    let serve = String::from_utf8(eshost(dir.path(), &["serve", "--help"]).stdout).unwrap();
    assert!(!serve.contains("--server"), "{serve}");
    assert!(serve.contains("--listen"), "{serve}");
    // Every global setting has its variable.
    for variable in [
        "ESHOST_DATABASE_URL",
        "ESHOST_CONCURRENCY",
        "ESHOST_GUEST_TIME_MS",
        "ESHOST_QUEUE_CAPACITY",
        "ESHOST_COMMAND_TIMEOUT_MS",
    ] {
        assert!(serve.contains(variable), "{variable} in: {serve}");
    }
}

#[test]
fn completions_are_printed_for_each_shell() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("bash", "_eshost()"),
        ("zsh", "#compdef eshost"),
        ("fish", "complete -c eshost"),
    ] {
        let output = eshost(dir.path(), &["completions", shell]);
        assert!(output.status.success(), "{}", stderr(&output));
        let script = String::from_utf8(output.stdout).unwrap();
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("exec"), "{shell} completes subcommands");
    }
}
