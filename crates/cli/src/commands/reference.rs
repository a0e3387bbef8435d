//! `eshost reference PAGE` (hidden): the book's reference pages.

use crate::reference::{ReferencePage, render};
use anyhow::Result;
use clap::Args;

/// Print the command line's or the HTTP API's reference as Markdown (the
/// book's reference pages are these).
#[derive(Debug, Args)]
pub struct ReferenceArgs {
    #[arg(value_enum)]
    page: ReferencePage,
}

pub fn run(args: ReferenceArgs) -> Result<()> {
    print!("{}", render(args.page));
    Ok(())
}
