//! Where in the config file a value is, for errors that name the key and its line: the line of
//! a byte offset, the line a key is written on, and the error builders every section uses.

use std::path::Path;

use crate::error::ConfigError;

/// The 1-based line of byte offset `at` in `text`.
pub(crate) fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

pub(crate) fn find_key_line(text: &str, key: &str) -> usize {
    text.find(key).map_or(1, |at| line_of(text, at))
}

/// The line where `key` first appears, for errors about table keys (serde gives no span for
/// a map key); 1 when it cannot be found.
/// A bad value of `key` (`section.name`): the error, on the line where `name` is written.
pub(crate) fn invalid_key(
    text: &str,
    path: &Path,
    key: &str,
    message: impl Into<String>,
) -> ConfigError {
    let name = key.rsplit('.').next().unwrap_or(key);
    ConfigError::Invalid {
        path: path.to_owned(),
        line: find_key_line(text, name),
        key: key.to_owned(),
        message: message.into(),
    }
}

/// The error for key `TABLE.key` of `path`, at the line of a value's span.
pub(crate) fn spanned_error<'a>(
    text: &'a str,
    path: &'a Path,
    table: &'a str,
) -> impl Fn(std::ops::Range<usize>, &str, String) -> ConfigError + 'a {
    move |span, key, message| ConfigError::Invalid {
        path: path.to_owned(),
        line: line_of(text, span.start),
        key: format!("{table}.{key}"),
        message,
    }
}
