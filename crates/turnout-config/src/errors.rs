//! `[errors]`: the directory of the pages turnout answers its own errors with, each page
//! read and bounded at start.

use std::path::{Path, PathBuf};

use crate::error::ConfigError;
use crate::file;
use crate::read::read_capped;
use crate::span::line_of;

/// Pages read from `[errors] dir` at start-up (a missing file keeps the built-in answer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorPages {
    /// The directory the pages were read from.
    pub dir: Option<PathBuf>,
    /// By status (502, 503, 504), and the maintenance page under 0.
    pub pages: Vec<(u16, String)>,
}

pub(crate) fn resolve_errors(
    file: file::FileErrors,
    text: &str,
    path: &Path,
) -> Result<ErrorPages, ConfigError> {
    let Some(dir) = file.dir else {
        return Ok(ErrorPages::default());
    };
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_owned(),
        line: line_of(text, dir.span().start),
        key: "errors.dir".into(),
        message,
    };
    if !dir.get_ref().is_dir() {
        return Err(invalid(format!(
            "{} is not a directory turnout can read",
            dir.get_ref().display()
        )));
    }
    let mut pages = Vec::new();
    for (status, name) in [
        (502, "502.html"),
        (503, "503.html"),
        (504, "504.html"),
        (0, "maintenance.html"),
    ] {
        let file = dir.get_ref().join(name);
        match read_capped(&file, 1024 * 1024) {
            Ok(bytes) => {
                let page = String::from_utf8(bytes)
                    .map_err(|_| invalid(format!("{} is not UTF-8 text", file.display())))?;
                pages.push((status, page));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(invalid(format!("{}: {e}", file.display()))),
        }
    }
    Ok(ErrorPages {
        dir: Some(dir.into_inner()),
        pages,
    })
}
