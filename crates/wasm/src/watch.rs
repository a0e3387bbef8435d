//! Watching a directory of components (the `notify` crate): a burst of
//! changes to its `*.wasm` files becomes one notification, sent once the
//! directory has been quiet for [`QUIET`] (a file being copied in sends
//! many events). Both the server's modules directory and the projections
//! directory are watched this way.

use notify::{RecursiveMode, Watcher};
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
