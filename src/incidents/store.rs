//! The incident directory: one `<id>.tar.gz` per incident, written under a temporary name and
//! renamed into place, files `0600` in a `0700` directory, bounded by count and bytes (the
//! oldest evicted). The index is rebuilt from the archives' `meta.json` at start, so incidents
//! from before a restart are listed after it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use super::meta::{valid_id, Meta};
use super::IncidentLimits;

/// Prefix of an archive being written; such files are removed at start.
const TMP_PREFIX: &str = ".tmp-";
/// The largest `meta.json` read back from an archive at start, bytes.
const MAX_META_BYTES: u64 = 64 * 1024;

/// The incident directory and its index.
#[derive(Debug)]
pub(crate) struct Store {
    dir: PathBuf,
    limits: IncidentLimits,
    /// Oldest first.
    index: Mutex<Vec<Meta>>,
}

impl Store {
    /// Creates `dir` (mode `0700`) if needed, checks that a file can be written in it, removes
    /// leftover temporary files and reads the archives already there. An error says which
    /// path and why.
    pub(crate) fn open(dir: &Path, limits: IncidentLimits) -> Result<Store, String> {
        let what = |e: io::Error| format!("incident directory {}: {e}", dir.display());
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(what)?;
        let meta = fs::metadata(dir).map_err(what)?;
        if !meta.is_dir() {
            return Err(format!(
                "incident directory {}: not a directory",
                dir.display()
            ));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| {
                format!(
                    "incident directory {}: cannot make it private (mode 0700): {e}",
                    dir.display()
                )
            })?;
        }
        let probe = dir.join(format!("{TMP_PREFIX}write-check-{}", std::process::id()));
        write_private(&probe, b"ok")
            .map_err(|e| format!("incident directory {} is not writable: {e}", dir.display()))?;
        let _ = fs::remove_file(&probe);
        let store = Store {
            dir: dir.to_path_buf(),
            limits,
            index: Mutex::new(Vec::new()),
        };
        store.rescan();
        Ok(store)
    }

    /// The directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The bounds.
    pub(crate) fn limits(&self) -> &IncidentLimits {
        &self.limits
    }

    fn index(&self) -> MutexGuard<'_, Vec<Meta>> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Re-reads the directory: temporary files are removed, every valid archive is indexed.
    fn rescan(&self) {
        let mut found = Vec::new();
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(TMP_PREFIX) {
                    let _ = fs::remove_file(entry.path());
                    continue;
                }
                let Some(id) = name.strip_suffix(".tar.gz") else {
                    continue;
                };
                if !valid_id(id) {
                    continue;
                }
                match read_meta(&entry.path()) {
                    Ok(mut m) if m.id == id => {
                        m.size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                        found.push(m);
                    }
                    Ok(_) => {
                        tracing::warn!(target: "prodbg", file = %name, "incident archive's meta.json names another id: not listed")
                    }
                    Err(e) => {
                        tracing::warn!(target: "prodbg", file = %name, error = %e, "unreadable incident archive: not listed")
                    }
                }
            }
        }
        found.sort_by(|a, b| a.id.cmp(&b.id));
        *self.index() = found;
    }

    /// Every incident, newest first.
    pub(crate) fn list(&self) -> Vec<Meta> {
        let mut all = self.index().clone();
        all.reverse();
        all
    }

    /// Incidents held and their bytes on disk.
    pub(crate) fn usage(&self) -> (usize, u64) {
        let index = self.index();
        (index.len(), index.iter().map(|m| m.size).sum())
    }

    /// The incident `id`, if listed.
    pub(crate) fn get(&self, id: &str) -> Option<Meta> {
        self.index().iter().find(|m| m.id == id).cloned()
    }

    /// The archive of a listed incident.
    pub(crate) fn read(&self, id: &str) -> io::Result<Vec<u8>> {
        if !valid_id(id) || self.get(id).is_none() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such incident"));
        }
        fs::read(self.path_of(id))
    }

    /// Deletes a listed incident; `Ok(false)` when there is none by that id.
    pub(crate) fn delete(&self, id: &str) -> io::Result<bool> {
        if !valid_id(id) {
            return Ok(false);
        }
        let mut index = self.index();
        let Some(i) = index.iter().position(|m| m.id == id) else {
            return Ok(false);
        };
        match fs::remove_file(self.path_of(id)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        index.remove(i);
        Ok(true)
    }

    fn path_of(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.tar.gz"))
    }

    /// Writes one incident: `meta.json` then `files` in a tar.gz, under a temporary name,
    /// synced, renamed into place; then the oldest are evicted until the bounds hold (the new
    /// one is never evicted). Returns the listed meta (with its size) and the ids evicted.
    pub(crate) fn write(
        &self,
        mut meta: Meta,
        files: &[(String, Vec<u8>)],
    ) -> io::Result<(Meta, Vec<String>)> {
        meta.files = files.iter().map(|(n, _)| n.clone()).collect();
        meta.size = 0;
        let meta_json = serde_json::to_vec_pretty(&meta).map_err(io::Error::other)?;
        let archive = tar_gz(&meta.id, &meta_json, files, SystemTime::now())?;
        let tmp = self.dir.join(format!("{TMP_PREFIX}{}.tar.gz", meta.id));
        if let Err(e) = write_private(&tmp, &archive) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        if let Err(e) = fs::rename(&tmp, self.path_of(&meta.id)) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        meta.size = archive.len() as u64;
        let mut index = self.index();
        index.push(meta.clone());
        index.sort_by(|a, b| a.id.cmp(&b.id));
        let evicted = self.evict(&mut index, &meta.id);
        Ok((meta, evicted))
    }

    fn evict(&self, index: &mut Vec<Meta>, keep: &str) -> Vec<String> {
        let mut evicted = Vec::new();
        loop {
            let bytes: u64 = index.iter().map(|m| m.size).sum();
            if index.len() <= self.limits.max_count && bytes <= self.limits.max_bytes {
                break;
            }
            let Some(i) = index.iter().position(|m| m.id != keep) else {
                break;
            };
            let old = index.remove(i);
            let _ = fs::remove_file(self.path_of(&old.id));
            evicted.push(old.id);
        }
        evicted
    }
}

/// Creates `path` with mode `0600` (failing if it exists), writes `bytes` and syncs.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// The archive: `<id>/meta.json`, then `<id>/<file>` for each file.
fn tar_gz(
    id: &str,
    meta: &[u8],
    files: &[(String, Vec<u8>)],
    at: SystemTime,
) -> io::Result<Vec<u8>> {
    let all = std::iter::once(("meta.json", meta))
        .chain(files.iter().map(|(n, b)| (n.as_str(), b.as_slice())));
    crate::encode::archive::tar_gz(id, all, at)
}

/// The `meta.json` of an archive (its first entry).
fn read_meta(path: &Path) -> Result<Meta, String> {
    let f = File::open(path).map_err(|e| e.to_string())?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut entries = tar.entries().map_err(|e| e.to_string())?;
    let first = entries
        .next()
        .ok_or("empty archive")?
        .map_err(|e| e.to_string())?;
    let name = first.path().map_err(|e| e.to_string())?.into_owned();
    if name.file_name().and_then(|n| n.to_str()) != Some("meta.json") {
        return Err("the first file is not meta.json".into());
    }
    let mut bytes = Vec::new();
    first
        .take(MAX_META_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| format!("meta.json: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incidents::meta::{new_id, Kind};

    fn meta(kind: Kind) -> Meta {
        Meta {
            id: new_id(kind, SystemTime::now()),
            kind,
            reason: "test".into(),
            time: crate::encode::time::format(SystemTime::now()),
            size: 0,
            files: vec![],
            pid: 1,
            service: "svc".into(),
        }
    }

    #[test]
    fn writes_private_files_lists_after_reopen_and_evicts_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("incidents");
        let limits = IncidentLimits {
            max_count: 2,
            ..IncidentLimits::default()
        };
        let store = Store::open(&d, limits.clone()).unwrap();
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let mut ids = Vec::new();
        for _ in 0..3 {
            let (m, _) = store
                .write(meta(Kind::Manual), &[("a.txt".into(), b"hello".to_vec())])
                .unwrap();
            ids.push(m.id);
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let listed: Vec<String> = store.list().into_iter().map(|m| m.id).collect();
        assert_eq!(listed, vec![ids[2].clone(), ids[1].clone()]);
        let f = d.join(format!("{}.tar.gz", ids[2]));
        assert_eq!(
            fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fs::write(d.join(".tmp-leftover.tar.gz"), b"x").unwrap();
        let again = Store::open(&d, limits).unwrap();
        let m = again.get(&ids[2]).unwrap();
        assert_eq!(m.files, vec!["a.txt".to_string()]);
        assert!(m.size > 0);
        assert!(!d.join(".tmp-leftover.tar.gz").exists());
        assert!(again.delete(&ids[2]).unwrap());
        assert!(!again.delete(&ids[2]).unwrap());
        assert!(again.read("../x").is_err());
    }

    #[test]
    fn an_unwritable_directory_is_a_clear_error() {
        let e = Store::open(
            Path::new("/proc/prodbg-incidents"),
            IncidentLimits::default(),
        )
        .unwrap_err();
        assert!(e.contains("/proc/prodbg-incidents"), "{e}");
    }
}
