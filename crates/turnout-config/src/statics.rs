//! `[[static]]`: directories served from disk under URL prefixes, in file order; a prefix is
//! checked as a path (no `..`, no doubled slash).

use std::path::{Path, PathBuf};

use crate::error::ConfigError;
use crate::file;
use crate::span::line_of;

/// `[[static]]`: a URL prefix served from a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticDir {
    /// Starts and ends with '/'.
    pub prefix: String,
    /// The directory, canonical (symlinks resolved) and known to exist at load time.
    pub root: PathBuf,
    /// Served for a request naming a directory.
    pub index: Option<String>,
    /// The `Cache-Control` files are served with.
    pub cache_control: Option<String>,
}

/// A URL prefix: starts and ends with '/', no query.
pub(crate) fn check_prefix(p: &str) -> Result<(), String> {
    if p.starts_with('/') && p.ends_with('/') && !p.contains(['?', '#']) {
        Ok(())
    } else {
        Err(format!(
            "{p:?} is not a path prefix: it must start and end with '/', like \"/static/\""
        ))
    }
}

pub(crate) fn resolve_statics(
    file: Vec<toml::Spanned<file::FileStatic>>,
    text: &str,
    path: &Path,
) -> Result<Vec<StaticDir>, ConfigError> {
    let invalid =
        |span: std::ops::Range<usize>, key: String, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            line: line_of(text, span.start),
            key,
            message,
        };
    let mut dirs = Vec::with_capacity(file.len());
    for (i, entry) in file.into_iter().enumerate() {
        let entry = entry.into_inner();
        let key = |field: &str| format!("static[{i}].{field}");
        check_prefix(entry.prefix.get_ref())
            .map_err(|m| invalid(entry.prefix.span(), key("prefix"), m))?;
        let root = entry.root.get_ref();
        let canonical = std::fs::canonicalize(root)
            .ok()
            .filter(|r| r.is_dir())
            .ok_or_else(|| {
                invalid(
                    entry.root.span(),
                    key("root"),
                    format!("{} is not a directory turnout can read", root.display()),
                )
            })?;
        if let Some(index) = &entry.index {
            if index.is_empty() || index.contains(['/', '\\']) || index == ".." {
                return Err(invalid(
                    entry.prefix.span(),
                    key("index"),
                    format!("{index:?} must be a file name, like \"index.html\""),
                ));
            }
        }
        if let Some(cc) = &entry.cache_control {
            if cc.get_ref().bytes().any(|b| b < 0x20 || b == 0x7f) {
                return Err(invalid(
                    cc.span(),
                    key("cache_control"),
                    "must be a valid header value".into(),
                ));
            }
        }
        dirs.push(StaticDir {
            prefix: entry.prefix.into_inner(),
            root: canonical,
            index: entry.index,
            cache_control: entry.cache_control.map(toml::Spanned::into_inner),
        });
    }
    Ok(dirs)
}
