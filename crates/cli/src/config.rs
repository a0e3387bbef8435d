//! `eshost.toml`: settings from a file, for a checkout, a deployment or a
//! systemd unit.
//!
//! Every setting has an `ESHOST_*` environment variable (see the options in
//! [`crate::args`] and the subcommands'); a key of the file is that
//! variable without `ESHOST_`, in lower case with dashes:
//!
//! ```toml
//! database-url = "postgres://eshost@db/eshost"
//! modules = "/var/lib/eshost/modules"
//! guest-time-ms = 500
//! listen = "127.0.0.1:8080"
//! ```
//!
//! The file is applied before the command line is parsed, as defaults of
//! those variables: a flag wins over a variable, a variable set outside
//! the file wins over the file, and the file wins over the built-in
//! default. So one mechanism, clap's own `env`, reads all three, and the
//! help shows every variable a file can set. It is found with `--config
//! FILE` (or `ESHOST_CONFIG`), else `./eshost.toml` when there is one. An
//! unknown key, or a file that is not TOML, is an error naming it.

use anyhow::{Context, Result, bail};
use clap::CommandFactory;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The file looked for in the working directory.
pub const FILE: &str = "eshost.toml";

/// The variable every setting's name starts with.
const PREFIX: &str = "ESHOST_";

/// Every key a file may set, with the variable it stands for: one per
/// option of the command line that has an `ESHOST_*` variable.
pub fn keys() -> BTreeMap<String, String> {
    let mut keys = BTreeMap::new();
    collect(&crate::args::Cli::command(), &mut keys);
    keys
}

fn collect(command: &clap::Command, keys: &mut BTreeMap<String, String>) {
    for arg in command.get_arguments() {
        if let Some(variable) = arg.get_env().and_then(|v| v.to_str())
            && let Some(name) = variable.strip_prefix(PREFIX)
            && name != "CONFIG"
        {
            keys.insert(name.to_lowercase().replace('_', "-"), variable.to_string());
        }
    }
    for sub in command.get_subcommands() {
        collect(sub, keys);
    }
}

/// Sets the defaults the file gives (and `DATABASE_URL`'s), before the
/// command line is parsed. Returns the file applied, if any.
///
/// Must run before any other thread starts: it changes the process's
/// environment.
pub fn apply(args: &[OsString]) -> Result<Option<PathBuf>> {
    let mut defaults: Vec<(String, String)> = Vec::new();
    let file = which_file(args);
    if let Some(file) = &file {
        defaults = read(file)?;
    }
    // The ecosystem's own variable for a database, below ours.
    if let Ok(url) = std::env::var("DATABASE_URL") {
        defaults.insert(0, ("ESHOST_DATABASE_URL".into(), url));
    }
    for (variable, value) in defaults {
        if std::env::var_os(&variable).is_none() {
            // SAFETY: called from `main` before the async runtime or any
            // other thread exists, so nothing reads the environment
            // concurrently.
            unsafe { std::env::set_var(&variable, value) };
        }
    }
    Ok(file)
}

/// `--config FILE` (or `--config=FILE`) among the arguments, else
/// `ESHOST_CONFIG`, else `./eshost.toml` if it exists. Read before clap
/// parses, since the file supplies clap's defaults.
fn which_file(args: &[OsString]) -> Option<PathBuf> {
    let mut args = args.iter().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(value) = arg.to_str().and_then(|a| a.strip_prefix("--config=")) {
            return Some(PathBuf::from(value));
        }
    }
    if let Some(file) = std::env::var_os("ESHOST_CONFIG") {
        return Some(PathBuf::from(file));
    }
    Path::new(FILE).is_file().then(|| PathBuf::from(FILE))
}

/// The file's settings as (variable, value).
fn read(file: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("{}: cannot read the settings file", file.display()))?;
    parse(&text).with_context(|| format!("{}", file.display()))
}

fn parse(text: &str) -> Result<Vec<(String, String)>> {
    let table: toml::Table = text.parse().context("not a TOML file")?;
    let keys = keys();
    let mut settings = Vec::new();
    for (key, value) in table {
        let Some(variable) = keys.get(&key) else {
            bail!(
                "unknown setting {key:?} (settings: {})",
                keys.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        };
        let value = match value {
            toml::Value::String(text) => text,
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(x) => x.to_string(),
            other => bail!(
                "{key}: a {} is not a setting's value (a string, a number or true/false)",
                other.type_str()
            ),
        };
        settings.push((variable.clone(), value));
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_global_setting_is_a_key() {
        let keys = keys();
        for key in [
            "database-url",
            "modules",
            "projections",
            "reactors",
            "cache-dir",
            "concurrency",
            "guest-time-ms",
            "listen",
            "token",
            "server",
        ] {
            assert!(keys.contains_key(key), "{key} is not a key: {keys:?}");
        }
        assert_eq!(keys["database-url"], "ESHOST_DATABASE_URL");
        assert!(!keys.contains_key("config"));
    }

    #[test]
    fn a_file_is_read_as_variables_and_an_unknown_key_is_named() {
        let settings = parse("modules = \"m\"\nguest-time-ms = 500\nno-cache = true\n").unwrap();
        assert_eq!(
            settings,
            [
                ("ESHOST_GUEST_TIME_MS".to_string(), "500".to_string()),
                ("ESHOST_MODULES".to_string(), "m".to_string()),
                ("ESHOST_NO_CACHE".to_string(), "true".to_string()),
            ]
        );
        let error = parse("modulez = \"m\"").unwrap_err().to_string();
        assert!(error.starts_with("unknown setting \"modulez\""), "{error}");
        assert!(parse("modules = [1]").is_err());
    }

    #[test]
    fn the_file_is_named_by_the_command_line_first() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            which_file(&args(&["eshost", "exec", "--config", "a.toml"])),
            Some(PathBuf::from("a.toml"))
        );
        assert_eq!(
            which_file(&args(&["eshost", "--config=b.toml", "state"])),
            Some(PathBuf::from("b.toml"))
        );
    }
}
