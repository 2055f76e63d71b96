//! A `tar.gz` of in-memory files under one directory (bundles, incidents): every entry mode
//! `0600` and stamped with one time.

use std::io;
use std::time::SystemTime;

/// `dir/<name>` for each `(name, bytes)`, in order, gzipped.
pub(crate) fn tar_gz<'a>(
    dir: &str,
    files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    at: SystemTime,
) -> io::Result<Vec<u8>> {
    let mtime = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, bytes) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o600);
        h.set_mtime(mtime);
        h.set_cksum();
        tar.append_data(&mut h, format!("{dir}/{name}"), bytes)?;
    }
    tar.into_inner()?.finish()
}
