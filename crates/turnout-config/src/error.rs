//! The one error type of configuration loading; every variant names the file, and where it can,
//! the line and the key.

use std::path::PathBuf;

/// Why a config file cannot be used; each names the file, and the line and key where it can.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Syntax errors, unknown keys and bad values; toml's message carries the line and column.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message.
        message: String,
    },
    /// Values that parse but do not fit together.
    #[error("config file {path}, line {line}: `{key}`: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line of the key (1-based).
        line: usize,
        /// The key, dotted (`server.listen`).
        key: String,
        /// What is wrong with its value.
        message: String,
    },
}
