//! `eshost view`: a projection's documents, from the store.

use crate::args::GlobalArgs;
use anyhow::{Result, bail};
use clap::Args;
use eshost_core::view::stored_key;
use eshost_store as store;
use serde::Serialize;
use std::io::Write;

/// Print a projection's document (its JSON), or with --all every document
/// of its view as JSON lines {"key", "document"}, in key order, all from
/// one consistent view (a rebuild never shows half-built).
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    eshost view sales-summary total\n  \
    eshost view sales-summary item:s1\n  \
    eshost view sales-summary --all")]
pub struct ViewArgs {
    /// The projection, e.g. sales-summary.
    name: String,
    /// The document's key (exits 1 if there is none).
    #[arg(required_unless_present = "all")]
    key: Option<String>,
    /// Every document.
    #[arg(long, conflicts_with = "key")]
    all: bool,
}

/// One line of `eshost view NAME --all`.
#[derive(Serialize)]
struct ViewLine<'a> {
    key: &'a str,
    document: &'a store::JsonText,
}

pub async fn run(global: &GlobalArgs, args: ViewArgs) -> Result<()> {
    let (name, key) = (args.name.as_str(), args.key.as_deref());
    let store = global.store().await?;
    // Not locked: the scan's visitor must be Send.
    let mut out = std::io::BufWriter::new(std::io::stdout());
    match key {
        Some(key) => match store.views().view_document(name, &stored_key(key)).await? {
            Some(document) => writeln!(out, "{}", serde_json::to_string(&document)?)?,
            None => bail!("{name} has no document {key:?}"),
        },
        None => {
            let mut visit = |key: &str, document: &store::JsonText| {
                serde_json::to_writer(&mut out, &ViewLine { key, document })?;
                out.write_all(b"\n")
            };
            let count = store.views().scan_view(name, &mut visit).await?;
            if count == 0
                && !store
                    .views()
                    .projections()
                    .await?
                    .iter()
                    .any(|p| p.name == name)
            {
                bail!("no projection {name:?} has run on this store");
            }
        }
    }
    out.flush()?;
    Ok(())
}
