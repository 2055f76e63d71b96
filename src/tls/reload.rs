//! Certificate rotation: the files are checked every `reload_every` (a `stat` each: device,
//! inode, size, modification time, following symlinks, so Kubernetes' atomic `..data` swap is
//! seen); when one changed they are loaded again. A load that fails keeps the configuration in
//! use, and is logged and audited; it is retried when a file changes again.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use super::Tls;
use crate::security::audit::{AuditLog, TlsReload};

/// What `stat` says of each watched file (or why it failed).
type Fingerprint = Vec<Result<(u64, u64, u64, i64, i64), String>>;

fn fingerprint(files: &[PathBuf]) -> Fingerprint {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .map(|m| (m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
                .map_err(|e| e.kind().to_string())
        })
        .collect()
}

/// Watches the files of `tls` until `stop` turns true. Runs its file IO on the blocking pool,
/// so a hung disk never stalls the admin thread.
pub(crate) async fn watch(tls: Arc<Tls>, audit: AuditLog, mut stop: watch::Receiver<bool>) {
    let files = tls.settings.files();
    if files.is_empty() {
        return;
    }
    let every = tls.settings.reload_every;
    let mut last = {
        let files = files.clone();
        tokio::task::spawn_blocking(move || fingerprint(&files))
            .await
            .unwrap_or_default()
    };
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(every) => {}
        }
        let seen = {
            let files = files.clone();
            match tokio::task::spawn_blocking(move || fingerprint(&files)).await {
                Ok(f) => f,
                Err(_) => continue,
            }
        };
        if seen == last {
            continue;
        }
        last = seen;
        let worker = tls.clone();
        let result = match tokio::task::spawn_blocking(move || worker.reload()).await {
            Ok(r) => r,
            Err(e) => Err(format!("the reload task failed: {e}")),
        };
        let names = files.iter().map(|f| f.display().to_string()).collect();
        match result {
            Ok(loaded) => {
                loaded.log("rotated: new handshakes use it");
                audit.tls_reload(TlsReload::loaded(names, &loaded.serial, &loaded.expires()));
            }
            Err(why) => {
                tracing::warn!(target: "prodbg", error = %why, "the admin server's TLS files changed but do not load: new handshakes keep the previous certificate");
                audit.tls_reload(TlsReload::rejected(names, &why));
            }
        }
    }
}
