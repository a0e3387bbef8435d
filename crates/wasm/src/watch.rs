//! Watching a directory of components (the `notify` crate): a burst of
//! changes to its `*.wasm` files becomes one notification, sent once the
//! directory has been quiet for [`QUIET`] (a file being copied in sends
//! many events). Both the server's modules directory and the projections
//! directory are watched this way.
//!
//! Opening or reading a file is no change: the host reads each component
//! it loads or checks, and a watcher that told those reads would make
//! every reload start the next one.

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long the directory must be quiet before a change is told.
pub const QUIET: Duration = Duration::from_millis(250);

/// Watches `dir` (not its subdirectories). Until the returned watcher is
/// dropped, the receiver gets one `()` per quiet burst of changes to
/// `*.wasm` files; then it ends. Must be called inside a tokio runtime.
pub fn watch_components(
    dir: &Path,
) -> notify::Result<(notify::RecommendedWatcher, mpsc::Receiver<()>)> {
    let (touched, mut touches) = mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let touches_a_component = match &event {
            Ok(event) if is_a_read(event.kind) => false,
            Ok(event) => event
                .paths
                .iter()
                .any(|p| p.extension().is_some_and(|ext| ext == "wasm")),
            // Something was missed: look again.
            Err(_) => true,
        };
        if touches_a_component {
            // Full means a notification is already due: nothing is lost.
            let _ = touched.try_send(());
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    let (changed, changes) = mpsc::channel::<()>(1);
    tokio::spawn(async move {
        while touches.recv().await.is_some() {
            loop {
                match tokio::time::timeout(QUIET, touches.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_quiet) => break,
                }
            }
            if changed.send(()).await.is_err() {
                return;
            }
        }
    });
    Ok((watcher, changes))
}

/// An access that changes nothing: a file opened, read, or closed without
/// writing. (Closed after writing is a change: a copy has finished.)
fn is_a_read(kind: EventKind) -> bool {
    matches!(kind, EventKind::Access(access) if access != AccessKind::Close(AccessMode::Write))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reading a component, as a reload or an upgrade check does, is not
    /// told as a change; writing it is. (Reads were told: a refused file
    /// in a served directory was checked again four times a second.)
    #[tokio::test]
    async fn reading_a_component_is_no_change_and_writing_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.wasm");
        std::fs::write(&file, b"one").unwrap();
        let (_watcher, mut changes) = watch_components(dir.path()).unwrap();
        for _ in 0..3 {
            std::fs::read(&file).unwrap();
        }
        let told = tokio::time::timeout(QUIET * 4, changes.recv()).await;
        assert!(told.is_err(), "reads were told as a change");
        std::fs::write(&file, b"two").unwrap();
        let told = tokio::time::timeout(Duration::from_secs(10), changes.recv()).await;
        assert_eq!(told, Ok(Some(())), "a write is a change");
    }
}
