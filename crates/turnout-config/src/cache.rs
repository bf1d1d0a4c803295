//! `[cache]`: the in-memory cache: its bound in bytes, the largest object, and the prefixes
//! whose upstream answers it keeps.

use std::path::Path;

use crate::error::ConfigError;
use crate::span::spanned_error;
use crate::statics::check_prefix;
use crate::{defaults, file};

/// `[cache]`: the in-memory cache of upstream assets and static files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    /// URL prefixes whose upstream GET/HEAD responses may be cached; empty: none.
    pub prefixes: Vec<String>,
    /// The bound on the bytes held (static files and upstream assets together).
    pub max_bytes: u64,
    /// Larger responses and files are never held; they stream.
    pub max_object: u64,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            prefixes: Vec::new(),
            max_bytes: defaults::CACHE_MAX_BYTES,
            max_object: defaults::CACHE_MAX_OBJECT,
        }
    }
}

pub(crate) fn resolve_cache(
    file: file::FileCache,
    text: &str,
    path: &Path,
) -> Result<Cache, ConfigError> {
    let invalid = spanned_error(text, path, "cache");
    let size = |value: &Option<toml::Spanned<String>>, key: &str, default: u64| match value {
        None => Ok(default),
        Some(v) => v
            .get_ref()
            .parse::<bytesize::ByteSize>()
            .map(|b| b.as_u64())
            .map_err(|_| {
                invalid(
                    v.span(),
                    key,
                    format!(
                        "invalid size {:?}: write it like \"256MiB\" or \"8MB\"",
                        v.get_ref()
                    ),
                )
            }),
    };
    let max_bytes = size(&file.max_bytes, "max_bytes", defaults::CACHE_MAX_BYTES)?;
    let max_object = size(&file.max_object, "max_object", defaults::CACHE_MAX_OBJECT)?;
    if max_object > max_bytes {
        let span = file.max_object.as_ref().map_or(0..0, toml::Spanned::span);
        return Err(invalid(
            span,
            "max_object",
            "must not be more than max_bytes".into(),
        ));
    }
    let mut prefixes = Vec::with_capacity(file.prefixes.len());
    for p in file.prefixes {
        check_prefix(p.get_ref()).map_err(|m| invalid(p.span(), "prefixes", m))?;
        prefixes.push(p.into_inner());
    }
    Ok(Cache {
        prefixes,
        max_bytes,
        max_object,
    })
}
