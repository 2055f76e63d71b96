//! Gzip compression for profile bodies (`profile.proto` is served gzipped, as Go does).

use std::io::Write as _;

/// Gzips `bytes` at the default level.
pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into a Vec cannot fail.
    enc.write_all(bytes).expect("write to Vec");
    enc.finish().expect("finish to Vec")
}

#[cfg(test)]
mod tests {
    #[test]
    fn gzip_round_trips() {
        use std::io::Read as _;
        let gz = super::gzip(b"hello profile");
        assert_eq!(&gz[..2], &[0x1f, 0x8b]);
        let mut out = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "hello profile");
    }
}
