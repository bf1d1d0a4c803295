//! `[log]`: how turnout's log lines are written: `text` (key=value, for people) or `json` (one
//! object per line, for a log pipeline).

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::error::ConfigError;
use crate::span::spanned_error;

/// `[log]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLog {
    /// `"text"` (default) or `"json"`.
    pub format: Option<Spanned<String>>,
}

/// How each log line is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `2026-12-07T13:09:30.123456Z  INFO turnout::access: method=GET ...`.
    #[default]
    Text,
    /// `{"timestamp":"...","level":"INFO","target":"turnout::access","method":"GET",...}`.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Log {
    /// `[log] format`.
    pub format: LogFormat,
}

pub(crate) fn resolve_log(file: FileLog, text: &str, path: &Path) -> Result<Log, ConfigError> {
    let invalid = spanned_error(text, path, "log");
    let format = match file.format {
        None => LogFormat::Text,
        Some(f) => match f.get_ref().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    f.span(),
                    "format",
                    format!("{other:?} is not a log format: \"text\" or \"json\""),
                ))
            }
        },
    };
    Ok(Log { format })
}
