//! `eshost personal`: the master key of personal data (decision record
//! 0056): make one, and rotate the store's keys to a new one. And
//! `eshost forget`, which forgets a data subject.

use crate::args::GlobalArgs;
use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use eshost_personal::{MasterKey, PersonalStore};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum PersonalCommand {
    /// Make a new master key: 32 random bytes in base64, for
    /// ESHOST_MASTER_KEY_FILE. Written to a new file readable by its owner
    /// only, or to stdout.
    #[command(after_help = "Examples:\n  \
        eshost personal new-key --out /etc/eshost/master.key\n  \
        eshost personal new-key > master.key")]
    NewKey(NewKeyArgs),
    /// Rewrap every key the store holds with the current master key
    /// (--master-key-file), reading those an older one wrapped with
    /// --previous-master-key-files. Pages of keys, each in its own
    /// transaction: an interrupted rotation is run again to finish. Then
    /// the previous keys are no longer needed.
    #[command(after_help = "Example:\n  \
        eshost personal rotate --master-key-file new.key --previous-master-key-files old.key")]
    Rotate(RotateArgs),
}

#[derive(Debug, Args)]
pub struct NewKeyArgs {
    /// The file to write; it must not exist [default: stdout].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// Print the counts as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Forget a data subject: record their erasure in the log, then delete
/// their key, so every field of theirs reads as {"$forgotten": PSEUDONYM}
/// from now on, and the snapshots of the streams they appear in. Safe to
/// run again: an interrupted forget is finished, a finished one finds
/// nothing left. Running servers drop the subject's streams from their
/// caches as they read the erasure from the log.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    eshost forget ann\n  \
    eshost forget --json ann")]
pub struct ForgetArgs {
    /// The subject's id, as the guests' events hold it (for the flash
    /// sale, a buyer id).
    #[arg(value_name = "SUBJECT")]
    pub subject: String,
    /// Print what was done as one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub async fn forget(global: &GlobalArgs, args: ForgetArgs) -> Result<()> {
    let store = global.store().await?;
    let erasure = store.forget_subject(&args.subject).await?;
    if args.json {
        let answer = match &erasure {
            Some(erasure) => serde_json::json!({ "forgotten": true, "erasure": erasure }),
            None => serde_json::json!({ "forgotten": false }),
        };
        println!("{answer}");
        return Ok(());
    }
    match erasure {
        Some(erasure) => println!(
            "forgot {}: erasure {} in {}/{}; {} streams, {} snapshots deleted",
            erasure.pseudonym,
            if erasure.recorded_now {
                "recorded"
            } else {
                "was recorded already"
            },
            eshost_core::erasure::SUBJECTS_AGGREGATE,
            erasure.pseudonym,
            erasure.streams.len(),
            erasure.snapshots_deleted,
        ),
        None => println!(
            "nothing to forget: no subject has this id (never recorded, or forgotten already)"
        ),
    }
    Ok(())
}

pub async fn run(global: &GlobalArgs, command: PersonalCommand) -> Result<()> {
    match command {
        PersonalCommand::NewKey(args) => {
            let key = MasterKey::generate()?;
            match args.out {
                Some(file) => {
                    crate::keys::write_new_key(&file, &key)?;
                    let id = MasterKey::from_base64(&key)?.id().to_owned();
                    eprintln!("wrote master key {id} to {}", file.display());
                }
                None => println!("{key}"),
            }
            Ok(())
        }
        PersonalCommand::Rotate(args) => {
            let Some(keyring) = global.keys.keyring(&global.database_url)? else {
                bail!("no master key to rotate to: set --master-key-file (ESHOST_MASTER_KEY_FILE)");
            };
            let inner = eshost_store::open(&global.database_url).await?;
            // Opening checks that the store's own key opens with these keys.
            let store = PersonalStore::open(inner, keyring, Default::default()).await?;
            let done = eshost_personal::rotate(&store).await?;
            let keyring = store.keyring();
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "master_key": keyring.current_id(),
                        "subjects": done.subjects,
                        "store_keys": done.store_keys,
                    })
                );
            } else {
                println!(
                    "rewrapped {} subject keys and {} store keys with master key {}",
                    done.subjects,
                    done.store_keys,
                    keyring.current_id()
                );
            }
            Ok(())
        }
    }
}
