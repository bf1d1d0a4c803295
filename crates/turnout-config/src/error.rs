//! The one error type of configuration loading; every variant names the file, and where it can,
//! the line and the key.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Syntax errors, unknown keys and bad values; toml's message carries the line and column.
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// Values that parse but do not fit together.
    #[error("config file {path}, line {line}: `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
}
