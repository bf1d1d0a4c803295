//! `[compression]`: which encodings turnout offers (gzip, br, zstd, in its order of
//! preference), for which content types, and from which size up.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::error::ConfigError;
use crate::span::spanned_error;

/// A content coding turnout can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `br`.
    Brotli,
    /// `zstd`.
    Zstd,
    /// `gzip`.
    Gzip,
}

impl Encoding {
    /// The token in `Accept-Encoding` and `Content-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
            Encoding::Gzip => "gzip",
        }
    }

    /// Its slot in a per-encoding array.
    pub fn index(self) -> usize {
        match self {
            Encoding::Brotli => 0,
            Encoding::Zstd => 1,
            Encoding::Gzip => 2,
        }
    }

    fn parse(s: &str) -> Option<Encoding> {
        match s {
            "br" => Some(Encoding::Brotli),
            "zstd" => Some(Encoding::Zstd),
            "gzip" => Some(Encoding::Gzip),
            _ => None,
        }
    }
}

/// `[compression]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compression {
    /// Offered encodings, best first (the one used when a client weighs several equally).
    pub encodings: Vec<Encoding>,
    /// Media types compressed (`text/*` covers every `text/` type).
    pub types: Vec<String>,
    /// Bodies shorter than this (by their `Content-Length`) are sent as they are.
    pub min_size: u64,
}

/// The media types compressed unless `types` says: text formats, not images or archives
/// (already compressed) nor `text/event-stream` (a compressor would hold events back).
pub const DEFAULT_TYPES: &[&str] = &[
    "text/html",
    "text/css",
    "text/plain",
    "text/xml",
    "text/javascript",
    "application/javascript",
    "application/json",
    "application/xml",
    "application/manifest+json",
    "application/wasm",
    "image/svg+xml",
];

/// `[compression]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCompression {
    encodings: Option<Vec<Spanned<String>>>,
    types: Option<Vec<Spanned<String>>>,
    min_size: Option<Spanned<String>>,
}

pub(crate) fn resolve_compression(
    file: FileCompression,
    text: &str,
    path: &Path,
) -> Result<Compression, ConfigError> {
    let invalid = spanned_error(text, path, "compression");
    let mut encodings = Vec::new();
    for e in file.encodings.unwrap_or_else(|| {
        ["br", "zstd", "gzip"]
            .map(|s| Spanned::new(0..0, s.to_owned()))
            .into()
    }) {
        let Some(enc) = Encoding::parse(e.get_ref()) else {
            return Err(invalid(
                e.span(),
                "encodings",
                format!(
                    "{:?}: turnout offers \"br\", \"zstd\" and \"gzip\"",
                    e.get_ref()
                ),
            ));
        };
        if encodings.contains(&enc) {
            return Err(invalid(
                e.span(),
                "encodings",
                format!("{:?} is listed twice", e.get_ref()),
            ));
        }
        encodings.push(enc);
    }
    if encodings.is_empty() {
        return Err(crate::span::invalid_key(
            text,
            path,
            "compression.encodings",
            "lists nothing: name at least one of \"br\", \"zstd\", \"gzip\" (or leave [compression] out)",
        ));
    }
    let types = match file.types {
        None => DEFAULT_TYPES.iter().map(|s| (*s).to_owned()).collect(),
        Some(list) => {
            let mut types = Vec::new();
            for t in list {
                let ty = t.get_ref().trim().to_ascii_lowercase();
                let ok = ty
                    .split_once('/')
                    .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty() && !b.contains('/'))
                    && !ty.contains([';', ' ', ','])
                    && ty != "*/*";
                if !ok || ty == "text/event-stream" {
                    return Err(invalid(
                        t.span(),
                        "types",
                        format!(
                            "{:?}: write a media type such as \"application/json\" or \"text/*\"{}",
                            t.get_ref(),
                            if ty == "text/event-stream" {
                                " (event streams are never compressed: it would hold events back)"
                            } else {
                                ""
                            }
                        ),
                    ));
                }
                types.push(ty);
            }
            types
        }
    };
    let min_size = match file.min_size {
        None => crate::defaults::COMPRESSION_MIN_SIZE,
        Some(v) => v
            .get_ref()
            .parse::<bytesize::ByteSize>()
            .map(|b| b.as_u64())
            .map_err(|_| {
                invalid(
                    v.span(),
                    "min_size",
                    format!("invalid size {:?}: write it like \"1KiB\"", v.get_ref()),
                )
            })?,
    };
    Ok(Compression {
        encodings,
        types,
        min_size,
    })
}
