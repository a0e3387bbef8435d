//! `eshost new`: scaffolds a guest, in Rust, TypeScript or Python, that
//! builds wherever it is put. The SDK is named by version, or by a path the
//! user gives; never by this machine's checkout of eshost.

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};

/// Scaffold a guest: a counter aggregate to start from, with its spec file.
///
/// Rust: a crate with a workspace of its own (`cargo test` runs its rules
/// natively). TypeScript: an npm package built with componentize-js.
/// Python: a module built with componentize-py. Each builds with `eshost
/// build` and comes with the contract (`wit/`) it implements.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    eshost new box-office\n  \
    eshost new box-office --lang ts --sdk ~/src/eshost/sdk/ts\n  \
    eshost new box-office --lang rust --sdk ~/src/eshost/sdk/rust --dir ~/src\n\n\
    Then:\n  \
    eshost build box-office --out modules/box-office.wasm\n  \
    eshost --modules modules exec BoxOffice b1 Create '{}'")]
pub struct NewArgs {
    /// The guest's name: lowercase letters, digits, - and _, starting with
    /// a letter. The aggregate is its CamelCase (box-office: BoxOffice).
    name: String,
    /// The language to write it in.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    lang: Lang,
    /// Where to create it [default: the working directory].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Use the SDK from this directory (an eshost checkout's sdk/rust,
    /// sdk/ts or sdk/py) instead of the published package.
    #[arg(long, value_name = "PATH")]
    sdk: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    #[value(name = "ts")]
    TypeScript,
    #[value(name = "py")]
    Python,
}

/// The SDKs' published versions, named when no `--sdk` path is given.
const RUST_SDK: &str = r#"eshost-guest = "0.1""#;
const TS_SDK: &str = "^0.2.0";
const PYTHON_SDK: &str = "eshost-guest==0.2.*";

/// The contract a TypeScript or Python guest is built against (the 0.3.0
/// world its SDK implements), written into its `wit/`.
const WIT: &[(&str, &str)] = &[(
    "wit/aggregate.wit",
    include_str!("../../wit/v0.3/aggregate.wit"),
)];

pub fn run(args: NewArgs) -> Result<()> {
    check_name(&args.name)?;
    let dir = args.dir.unwrap_or_default().join(&args.name);
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    let sdk = match &args.sdk {
        Some(path) => Some(
            std::path::absolute(path)
                .with_context(|| format!("{}: cannot resolve the SDK's path", path.display()))?,
        ),
        None => None,
    };
    if let Some(sdk) = &sdk
        && !sdk.is_dir()
    {
        bail!("{}: no such SDK directory", sdk.display());
    }
    let aggregate = camel_case(&args.name);
    let files = files(args.lang, sdk.as_deref());
    let fill = |template: &str| {
        template
            .replace("{crate}", &args.name)
            .replace("{aggregate}", &aggregate)
    };
    for (file, text) in files {
        let path = dir.join(fill(&file));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, fill(&text))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let next = match args.lang {
        Lang::Rust => "",
        Lang::TypeScript => "\n  (cd DIR && npm install)",
        Lang::Python => {
            "\n  python3 -m venv DIR/.venv && DIR/.venv/bin/pip install -r DIR/requirements.txt"
        }
    };
    eprintln!(
        "created {dir} (aggregate {aggregate}); next:{next}\n  eshost build {dir} --out modules/{name}.wasm\n  eshost --modules modules exec {aggregate} c1 Create '{{}}'",
        dir = dir.display(),
        name = args.name,
        next = next.replace("DIR", &dir.display().to_string()),
    );
    Ok(())
}

/// The files of a new guest (paths and texts still holding `{crate}` and
/// `{aggregate}`), with the SDK named.
fn files(lang: Lang, sdk: Option<&Path>) -> Vec<(String, String)> {
    let shown = |sdk: &Path| sdk.display().to_string().replace('\\', "/");
    let (templates, dependency, wit) = match lang {
        Lang::Rust => (
            RUST_FILES,
            sdk.map_or(RUST_SDK.to_string(), |sdk| {
                format!("eshost-guest = {{ path = {:?} }}", shown(sdk))
            }),
            &[][..],
        ),
        Lang::TypeScript => (
            TS_FILES,
            sdk.map_or(TS_SDK.to_string(), |sdk| format!("file:{}", shown(sdk))),
            WIT,
        ),
        Lang::Python => (PY_FILES, sdk.map_or(PYTHON_SDK.to_string(), shown), WIT),
    };
    templates
        .iter()
        .chain(wit)
        .map(|(path, text)| {
            let text = text.replace("{sdk_dependency}", &dependency);
            (path.to_string(), text)
        })
        .collect()
}

/// Each language's files: where each goes, and its template.
const SPEC: (&str, &str) = (
    "{crate}.spec.toml",
    include_str!("../../templates/spec.toml.tmpl"),
);

const RUST_FILES: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../templates/rust/Cargo.toml.tmpl"),
    ),
    (
        "src/lib.rs",
        include_str!("../../templates/rust/lib.rs.tmpl"),
    ),
    (
        ".gitignore",
        include_str!("../../templates/rust/gitignore.tmpl"),
    ),
    SPEC,
];

const TS_FILES: &[(&str, &str)] = &[
    (
        "package.json",
        include_str!("../../templates/ts/package.json.tmpl"),
    ),
    ("build.mjs", include_str!("../../templates/ts/build.mjs")),
    (
        "tsconfig.json",
        include_str!("../../templates/ts/tsconfig.json"),
    ),
    (
        "src/{crate}.ts",
        include_str!("../../templates/ts/guest.ts.tmpl"),
    ),
    (
        ".gitignore",
        include_str!("../../templates/ts/gitignore.tmpl"),
    ),
    SPEC,
];

const PY_FILES: &[(&str, &str)] = &[
    ("app.py", include_str!("../../templates/py/app.py.tmpl")),
    (
        "aggregate.py",
        include_str!("../../templates/py/aggregate.py"),
    ),
    (
        "requirements.txt",
        include_str!("../../templates/py/requirements.txt.tmpl"),
    ),
    (
        "README.md",
        include_str!("../../templates/py/README.md.tmpl"),
    ),
    (
        ".gitignore",
        include_str!("../../templates/py/gitignore.tmpl"),
    ),
    SPEC,
];

/// Lowercase letters, digits, `-` and `_`, starting with a letter: a name
/// that is a crate name, an npm name and a file name alike.
fn check_name(name: &str) -> Result<()> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        bail!(
            "{name:?}: a guest's name is lowercase letters, digits, - and _, starting with a letter"
        );
    }
    Ok(())
}

/// `box-office` as `BoxOffice`.
fn camel_case(name: &str) -> String {
    name.split(['-', '_'])
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_aggregates() {
        assert_eq!(camel_case("box-office"), "BoxOffice");
        assert_eq!(camel_case("a_b-c"), "ABC");
        assert!(check_name("box-office").is_ok());
        assert!(check_name("Box").is_err());
        assert!(check_name("--help").is_err());
        assert!(check_name("1x").is_err());
    }
}
