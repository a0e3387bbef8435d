//! `eshost completions SHELL`: a completion script for a shell.

use anyhow::Result;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

/// Print a completion script for a shell.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    eshost completions bash > ~/.local/share/bash-completion/completions/eshost\n  \
    eshost completions zsh > ~/.zfunc/_eshost\n  \
    eshost completions fish > ~/.config/fish/completions/eshost.fish")]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: Shell,
}

pub fn run(args: CompletionsArgs) -> Result<()> {
    let mut command = crate::args::Cli::command();
    clap_complete::generate(args.shell, &mut command, "eshost", &mut std::io::stdout());
    Ok(())
}
