//! Files read whole, with a bound: a config, a state or a page file that never ends
//! (`/dev/zero`) is refused, naming it, instead of growing memory.

use std::path::Path;

/// The most turnout reads of a config file.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Reads at most `limit` bytes of `path`; a longer file (or an endless one, such as a device)
/// is refused with an `InvalidData` error that says so, before more than `limit + 1` bytes are
/// held. Config, state, certificate, key and CA files are all read through this.
pub fn read_capped(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes, the most turnout reads of such a file"),
        ));
    }
    Ok(bytes)
}

/// [`read_capped`] for a text file: bytes that are not UTF-8 are an `InvalidData` error that
/// says so.
pub fn read_text_capped(path: &Path, limit: u64) -> std::io::Result<String> {
    String::from_utf8(read_capped(path, limit)?).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not UTF-8 text ({e})"),
        )
    })
}
