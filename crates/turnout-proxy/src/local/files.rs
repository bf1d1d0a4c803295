//! `[[static]]` directories served from disk: content type, validators (strong ETag,
//! Last-Modified) and conditional requests, single byte ranges, HEAD, precompressed `.br` /
//! `.gz` siblings, and no way out of the root. Small files are served from the shared cache
//! (re-read when their size or modification time changes); large ones stream from disk.
//!
//! By hand rather than tower-http's `ServeDir`: that one sends no ETag and reads every file
//! from disk on every request; the memory cache and strong validators are the point here.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use tokio::io::AsyncSeekExt;

use crate::body::ProxyBody;
use crate::cache::{none_match, Cache, Entry, FileData, Key};
use crate::error::text_response;

/// One `[[static]]` entry, with its headers made once.
#[derive(Debug)]
struct Dir {
    prefix: String,
    root: PathBuf,
    index: Option<String>,
    cache_control: Option<HeaderValue>,
}

#[derive(Debug)]
pub struct StaticFiles {
    dirs: Box<[Dir]>,
    cache: Arc<Cache>,
    /// Request paths already resolved (symlinks, index) to a file inside their root, for
    /// [`RESOLVED_FOR`]: a request then costs one `stat` (which still catches every change of
    /// size or modification time) instead of a `realpath` walk, as nginx's open_file_cache does.
    resolved: moka::sync::Cache<(usize, Box<str>), Arc<Path>>,
}

/// How long a resolved path is trusted before it is walked again (so a directory on the way
/// that is replaced by a symlink out of the root stops being followed within this; a file
/// replaced by a symlink is caught at once).
const RESOLVED_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// Why a path was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// A path that tries to leave its root (or holds bytes no file name may).
    Forbidden,
    NotFound,
}

impl StaticFiles {
    pub fn new(dirs: &[turnout_config::StaticDir], cache: Arc<Cache>) -> StaticFiles {
        StaticFiles {
            dirs: dirs
                .iter()
                .map(|d| Dir {
                    prefix: d.prefix.clone(),
                    root: d.root.clone(),
                    index: d.index.clone(),
                    cache_control: d
                        .cache_control
                        .as_deref()
                        .map(|c| HeaderValue::from_str(c).expect("validated in the config")),
                })
                .collect(),
            cache,
            resolved: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(RESOLVED_FOR)
                .build(),
        }
    }

    /// The index of the directory serving `path`, if one does.
    #[inline]
    pub fn matches(&self, path: &str) -> Option<usize> {
        self.dirs
            .iter()
            .position(|d| path.starts_with(d.prefix.as_str()))
    }

    /// Serves `req` from directory `dir` (an index from [`StaticFiles::matches`]).
    pub async fn serve<B>(&self, index: usize, req: &Request<B>) -> Response<ProxyBody> {
        let dir = &self.dirs[index];
        let head = match *req.method() {
            Method::GET => false,
            Method::HEAD => true,
            _ => {
                let mut resp = text_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "405 Method Not Allowed: static files answer GET and HEAD\n",
                );
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                return resp;
            }
        };
        match self.find_cached(index, req.uri().path()) {
            Ok((path, meta)) => self.send(dir, req.headers(), head, path, meta).await,
            Err(Refused::Forbidden) => text_response(StatusCode::FORBIDDEN, "403 Forbidden\n"),
            Err(Refused::NotFound) => text_response(StatusCode::NOT_FOUND, "404 Not Found\n"),
        }
    }

    /// [`StaticFiles::find`], through the table of recently resolved paths.
    fn find_cached(
        &self,
        index: usize,
        path: &str,
    ) -> Result<(PathBuf, std::fs::Metadata), Refused> {
        let key = (index, Box::from(path));
        if let Some(real) = self.resolved.get(&key) {
            // Not following a symlink: a resolved path names a plain file, and if that file
            // has been replaced by a symlink since, the full walk decides again.
            if let Ok(meta) = std::fs::symlink_metadata(&*real) {
                if meta.is_file() {
                    return Ok((real.to_path_buf(), meta));
                }
            }
            self.resolved.invalidate(&key);
        }
        let (real, meta) = self.find(&self.dirs[index], path)?;
        self.resolved.insert(key, Arc::from(real.as_path()));
        Ok((real, meta))
    }

    /// The file a request path names under `dir`, checked to lie inside its root.
    ///
    /// The lookups are plain blocking calls (as nginx makes them): a `realpath` and a `stat` of
    /// a file whose inode is cached take microseconds, far less than a hop to tokio's blocking
    /// pool, which halved the rate of small static files when this used `tokio::fs`.
    fn find(&self, dir: &Dir, path: &str) -> Result<(PathBuf, std::fs::Metadata), Refused> {
        let relative = relative_path(&path[dir.prefix.len()..])?;
        let (mut real, mut meta) = inside(&dir.root, &dir.root.join(relative))?;
        if meta.is_dir() {
            let index = dir.index.as_deref().ok_or(Refused::NotFound)?;
            (real, meta) = inside(&dir.root, &real.join(index))?;
        }
        if !meta.is_file() {
            return Err(Refused::NotFound);
        }
        Ok((real, meta))
    }

    async fn send(
        &self,
        dir: &Dir,
        req: &HeaderMap,
        head: bool,
        path: PathBuf,
        meta: std::fs::Metadata,
    ) -> Response<ProxyBody> {
        let content_type = mime_guess::from_path(&path).first_raw().map_or(
            HeaderValue::from_static("application/octet-stream"),
            HeaderValue::from_static,
        );
        // A precompressed sibling, when the client takes its encoding.
        let (path, meta, encoding) = self.precompressed(&dir.root, req, path, meta);
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let size = meta.len();
        let etag = etag(size, modified, encoding);

        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, content_type);
        headers.insert(header::ETAG, etag.clone());
        headers.insert(
            header::LAST_MODIFIED,
            HeaderValue::try_from(httpdate::fmt_http_date(modified))
                .expect("a date is a header value"),
        );
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        if let Some(enc) = encoding {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(enc));
        }
        if let Some(cc) = &dir.cache_control {
            headers.insert(header::CACHE_CONTROL, cc.clone());
        }

        if not_modified(req, &etag, modified) {
            headers.remove(header::CONTENT_TYPE);
            return respond(StatusCode::NOT_MODIFIED, headers, ProxyBody::empty());
        }
        let range = match requested_range(req, &etag, modified, size) {
            Ok(r) => r,
            Err(()) => {
                headers.insert(
                    header::CONTENT_RANGE,
                    HeaderValue::try_from(format!("bytes */{size}")).expect("ascii"),
                );
                headers.remove(header::CONTENT_TYPE);
                let mut resp = text_response(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "416 Range Not Satisfiable\n",
                );
                resp.headers_mut().extend(headers);
                return resp;
            }
        };
        let (status, start, len) = match range {
            Some((start, end)) => {
                headers.insert(
                    header::CONTENT_RANGE,
                    HeaderValue::try_from(format!("bytes {start}-{end}/{size}")).expect("ascii"),
                );
                (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
            }
            None => (StatusCode::OK, 0, size),
        };
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        if head {
            return respond(status, headers, ProxyBody::empty());
        }
        let body = if size <= self.cache.max_object {
            match self.contents(&path, size, modified).await {
                Ok(bytes) => ProxyBody::bytes(bytes.slice(start as usize..(start + len) as usize)),
                Err(e) => return read_failed(&path, &e),
            }
        } else {
            match open_at(&path, start).await {
                Ok(file) => ProxyBody::file(file, len),
                Err(e) => return read_failed(&path, &e),
            }
        };
        respond(status, headers, body)
    }

    /// `path.br` or `path.gz` when the client accepts that encoding and the sibling exists.
    fn precompressed(
        &self,
        root: &Path,
        req: &HeaderMap,
        path: PathBuf,
        meta: std::fs::Metadata,
    ) -> (PathBuf, std::fs::Metadata, Option<&'static str>) {
        for (enc, ext) in [("br", "br"), ("gzip", "gz")] {
            if !accepts(req, enc) {
                continue;
            }
            let mut sibling = path.clone().into_os_string();
            sibling.push(".");
            sibling.push(ext);
            let sibling = PathBuf::from(sibling);
            // The sibling too must lie under the root (it may be a symlink).
            if let Ok((real, m)) = inside(root, &sibling) {
                if m.is_file() {
                    return (real, m, Some(enc));
                }
            }
        }
        (path, meta, None)
    }

    /// The file's bytes from the cache, or read now (and cached) when absent or stale.
    async fn contents(
        &self,
        path: &Path,
        size: u64,
        modified: SystemTime,
    ) -> std::io::Result<Bytes> {
        let key = Key::File(path.to_owned());
        if let Some(Entry::File(f)) = self.cache.entries.get(&key).await {
            if f.size == size && f.modified == modified {
                self.cache.hit();
                return Ok(f.body.clone());
            }
        }
        self.cache.miss();
        let body = Bytes::from(tokio::fs::read(path).await?);
        if body.len() as u64 == size {
            let data = FileData {
                body: body.clone(),
                size,
                modified,
            };
            self.cache
                .entries
                .insert(key, Entry::File(Arc::new(data)))
                .await;
        }
        Ok(body)
    }
}

/// `path` with its symlinks resolved, and its metadata, if it exists and lies under `root`.
fn inside(root: &Path, path: &Path) -> Result<(PathBuf, std::fs::Metadata), Refused> {
    // Symlinks may point anywhere: the resolved path must still be under the root.
    let real = std::fs::canonicalize(path).map_err(|_| Refused::NotFound)?;
    if !real.starts_with(root) {
        return Err(Refused::NotFound);
    }
    let meta = std::fs::metadata(&real).map_err(|_| Refused::NotFound)?;
    Ok((real, meta))
}

/// The request path after the prefix, percent-decoded, as a relative path of plain names;
/// refused if any segment is `..`, or holds a NUL, a backslash or an encoded slash trick.
pub(crate) fn relative_path(rest: &str) -> Result<PathBuf, Refused> {
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(rest).collect();
    if decoded.contains(&0) || decoded.contains(&b'\\') {
        return Err(Refused::Forbidden);
    }
    let decoded = String::from_utf8(decoded).map_err(|_| Refused::NotFound)?;
    let mut path = PathBuf::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => continue,
            ".." => return Err(Refused::Forbidden),
            s => {
                // One normal component each: anything else (a root, a prefix) is refused.
                let mut c = Path::new(s).components();
                match (c.next(), c.next()) {
                    (Some(Component::Normal(_)), None) => path.push(s),
                    _ => return Err(Refused::Forbidden),
                }
            }
        }
    }
    Ok(path)
}

/// A strong validator from the size and the modification time (as nginx makes it), per encoding.
fn etag(size: u64, modified: SystemTime, encoding: Option<&str>) -> HeaderValue {
    let nanos = modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tag = match encoding {
        Some(e) => format!("\"{size:x}-{nanos:x}-{e}\""),
        None => format!("\"{size:x}-{nanos:x}\""),
    };
    HeaderValue::try_from(tag).expect("ascii")
}

/// If-None-Match (when sent, it alone decides), else If-Modified-Since (to the second), both
/// hyperium's typed headers.
fn not_modified(req: &HeaderMap, etag: &HeaderValue, modified: SystemTime) -> bool {
    use headers::HeaderMapExt;
    if req.contains_key(header::IF_NONE_MATCH) {
        return none_match(req, etag);
    }
    req.typed_get::<headers::IfModifiedSince>()
        .is_some_and(|since| !since.is_modified(modified))
}

/// A single byte range asked for: `Ok(None)` for the whole file (no Range, several ranges, a
/// non-bytes unit, or an If-Range, hyperium's typed header, that no longer matches the file:
/// its entity-tag compared strongly, or its date), `Err` when unsatisfiable.
///
/// The range itself by hand: `headers::Range::satisfiable_ranges` drops a suffix longer than
/// the file, where RFC 9110 (14.1.2) serves the whole file, and does not clamp a last position
/// past the end.
fn requested_range(
    req: &HeaderMap,
    etag: &HeaderValue,
    modified: SystemTime,
    size: u64,
) -> Result<Option<(u64, u64)>, ()> {
    use headers::HeaderMapExt;
    let Some(range) = req.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    if req.contains_key(header::IF_RANGE) {
        let ours = etag
            .to_str()
            .ok()
            .and_then(|e| e.parse::<headers::ETag>().ok());
        let changed = req.typed_get::<headers::IfRange>().is_none_or(|if_range| {
            if_range.is_modified(ours.as_ref(), Some(&headers::LastModified::from(modified)))
        });
        if changed {
            return Ok(None);
        }
    }
    let Some(spec) = range.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (first, last) = spec.split_once('-').ok_or(())?;
    let (first, last) = (first.trim(), last.trim());
    let (start, end) = if first.is_empty() {
        // The last N bytes.
        let n: u64 = last.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size.checked_sub(1).ok_or(())?)
    } else {
        let start: u64 = first.parse().map_err(|_| ())?;
        let end = if last.is_empty() {
            size.saturating_sub(1)
        } else {
            last.parse::<u64>()
                .map_err(|_| ())?
                .min(size.saturating_sub(1))
        };
        (start, end)
    };
    if size == 0 || start >= size || start > end {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// Does `Accept-Encoding` take `encoding` (listed, and not with q=0)?
fn accepts(req: &HeaderMap, encoding: &str) -> bool {
    req.get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let zero = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            name.eq_ignore_ascii_case(encoding) && !zero
        })
}

async fn open_at(path: &Path, start: u64) -> std::io::Result<tokio::fs::File> {
    let mut file = tokio::fs::File::open(path).await?;
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start)).await?;
    }
    Ok(file)
}

fn respond(status: StatusCode, headers: HeaderMap, body: ProxyBody) -> Response<ProxyBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

fn read_failed(path: &Path, e: &std::io::Error) -> Response<ProxyBody> {
    tracing::warn!(file = %path.display(), error = %e, "cannot read a static file");
    text_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "500 Internal Server Error: the file could not be read\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_leave_the_root() {
        assert_eq!(
            relative_path("css/site.css"),
            Ok(PathBuf::from("css/site.css"))
        );
        assert_eq!(relative_path("a//./b"), Ok(PathBuf::from("a/b")));
        for bad in [
            "../etc/passwd",
            "a/../../x",
            "%2e%2e/x",
            "%2E%2E%2fx",
            "..%2fx",
            "a\\..\\x",
            "a%5c..%5cx",
            "x%00.css",
        ] {
            assert_eq!(relative_path(bad), Err(Refused::Forbidden), "{bad}");
        }
    }

    #[test]
    fn ranges() {
        let etag = HeaderValue::from_static("\"e\"");
        let r = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::RANGE, HeaderValue::from_static(v));
            requested_range(&h, &etag, SystemTime::UNIX_EPOCH, 100)
        };
        assert_eq!(r("bytes=0-9"), Ok(Some((0, 9))));
        assert_eq!(r("bytes=90-"), Ok(Some((90, 99))));
        assert_eq!(r("bytes=-10"), Ok(Some((90, 99))));
        assert_eq!(r("bytes=95-200"), Ok(Some((95, 99))));
        assert_eq!(r("bytes=0-1,5-6"), Ok(None));
        assert_eq!(r("items=0-1"), Ok(None));
        assert_eq!(r("bytes=100-"), Err(()));
        assert_eq!(r("bytes=9-3"), Err(()));
        assert_eq!(r("bytes=-0"), Err(()));
        assert_eq!(r("bytes=x-3"), Err(()));
    }

    #[test]
    fn if_range_and_if_modified_since_are_read_as_typed_headers() {
        let etag = HeaderValue::from_static("\"e\"");
        let modified = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let date = |t: SystemTime| httpdate::fmt_http_date(t);
        let ranged = |if_range: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::RANGE, HeaderValue::from_static("bytes=0-9"));
            h.insert(
                header::IF_RANGE,
                HeaderValue::try_from(if_range).expect("value"),
            );
            requested_range(&h, &etag, modified, 100)
        };
        assert_eq!(ranged("\"e\""), Ok(Some((0, 9))), "the same tag: the range");
        assert_eq!(ranged("\"f\""), Ok(None), "another tag: the whole file");
        assert_eq!(ranged("W/\"e\""), Ok(None), "a weak tag never matches");
        assert_eq!(
            ranged(&date(modified)),
            Ok(Some((0, 9))),
            "not changed since"
        );
        let before = modified - std::time::Duration::from_secs(60);
        assert_eq!(ranged(&date(before)), Ok(None), "changed since");
        assert_eq!(ranged("yesterday"), Ok(None), "unreadable: the whole file");

        let since = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::IF_MODIFIED_SINCE,
                HeaderValue::try_from(v).expect("value"),
            );
            not_modified(&h, &etag, modified)
        };
        assert!(since(&date(modified)));
        assert!(since(&date(modified + std::time::Duration::from_secs(5))));
        assert!(!since(&date(before)));
        assert!(!since("not a date"));
        assert!(!since(&"9".repeat(4096)));
        // If-None-Match, when sent, decides alone.
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        h.insert(
            header::IF_MODIFIED_SINCE,
            HeaderValue::try_from(date(modified)).expect("value"),
        );
        assert!(!not_modified(&h, &etag, modified));
    }

    #[test]
    fn accept_encoding() {
        let h = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(v));
            h
        };
        assert!(accepts(&h("gzip, deflate, br"), "br"));
        assert!(!accepts(&h("gzip, br;q=0"), "br"));
        assert!(accepts(&h("gzip;q=0.5"), "gzip"));
        assert!(!accepts(&HeaderMap::new(), "gzip"));
    }
}
