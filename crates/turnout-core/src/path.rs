//! Request paths as prefix lists see them: normalised (RFC 3986 5.2.4 dot segments removed,
//! percent-encoded unreserved characters decoded, empty segments merged) and matched on segment
//! boundaries. A prefix list that compared raw paths (`/api/health/../../admin` starts with
//! `/api/health`) would let a request through that the app then resolves to another path.
//!
//! Written by hand: the `url` crate normalises whole URLs (and decodes nothing), and what is
//! needed here is a byte scan that allocates only for the rare path that needs rewriting.

use std::borrow::Cow;

/// `raw` normalised, or `None` for a path no prefix may match because it cannot be normalised
/// safely: a backslash, an encoded `/` or `\` (`%2F`, `%5C`: an app may decode them into
/// separators), an encoded NUL, a malformed `%` escape, a `..` above the root, or a path that
/// does not start with `/`. The common path (none of `%`, `\`, `/.`, `//`) is returned as it is.
pub fn normalize(raw: &str) -> Option<Cow<'_, str>> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return None;
    }
    let plain = !bytes.contains(&b'%')
        && !bytes.contains(&b'\\')
        && !bytes.windows(2).any(|w| w == b"/." || w == b"//");
    if plain {
        return Some(Cow::Borrowed(raw));
    }
    if bytes.contains(&b'\\') {
        return None;
    }
    // Decode the unreserved characters; keep other escapes, upper-cased.
    let mut decoded: Vec<u8> = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            decoded.push(b);
            i += 1;
            continue;
        }
        let hex = bytes.get(i + 1..i + 3)?;
        let hi = (hex[0] as char).to_digit(16)?;
        let lo = (hex[1] as char).to_digit(16)?;
        let c = u8::try_from(hi * 16 + lo).ok()?;
        match c {
            b'/' | b'\\' | 0 => return None,
            c if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') => {
                decoded.push(c);
            }
            _ => {
                decoded.extend_from_slice(&[
                    b'%',
                    hex[0].to_ascii_uppercase(),
                    hex[1].to_ascii_uppercase(),
                ]);
            }
        }
        i += 3;
    }
    // Only ASCII bytes were added to the raw path's own (UTF-8) ones.
    let decoded = String::from_utf8(decoded).ok()?;
    // Dot segments and empty segments.
    let mut out: Vec<&str> = Vec::new();
    let mut trailing = false;
    for segment in decoded[1..].split('/') {
        trailing = false;
        match segment {
            "" | "." => trailing = true,
            ".." => {
                out.pop()?;
                trailing = true;
            }
            s => out.push(s),
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for s in &out {
        path.push('/');
        path.push_str(s);
    }
    if trailing || out.is_empty() {
        path.push('/');
    }
    Some(Cow::Owned(path))
}

/// `path` (normalised) lies under `prefix`: equal to it, or below it on a segment boundary
/// (`/api` covers `/api` and `/api/x`, not `/apix`; `/assets/` covers `/assets/x`).
#[inline]
pub fn under(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
    }
}

/// Whether `raw` (a request's path as it came) normalises to a path under one of `prefixes`.
/// A path that cannot be normalised is under none.
#[inline]
pub fn under_any(raw: &str, prefixes: &[String]) -> bool {
    if prefixes.is_empty() {
        return false;
    }
    match normalize(raw) {
        Some(path) => prefixes.iter().any(|p| under(&path, p)),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_are_borrowed() {
        assert!(matches!(
            normalize("/assets/app.js"),
            Some(Cow::Borrowed(_))
        ));
        assert!(matches!(normalize("/"), Some(Cow::Borrowed("/"))));
    }

    #[test]
    fn dot_segments_escapes_and_slashes_are_resolved() {
        let n = |p| normalize(p).map(Cow::into_owned);
        assert_eq!(n("/api/health/../../admin").as_deref(), Some("/admin"));
        assert_eq!(
            n("/api/health/%2e%2e/%2E%2E/admin").as_deref(),
            Some("/admin")
        );
        assert_eq!(n("/api/./health/").as_deref(), Some("/api/health/"));
        assert_eq!(n("/api//health").as_deref(), Some("/api/health"));
        assert_eq!(n("/api/health/..").as_deref(), Some("/api/"));
        assert_eq!(n("/%61pi/h%65alth").as_deref(), Some("/api/health"));
        assert_eq!(n("/a/%3f/b").as_deref(), Some("/a/%3F/b"));
        assert_eq!(n("/.."), None);
        assert_eq!(n("/api/../../x"), None);
        assert_eq!(n("/api/health%2f..%2fadmin"), None);
        assert_eq!(n("/api/health%2F..%2Fadmin"), None);
        assert_eq!(n("/api/health%5c..%5cadmin"), None);
        assert_eq!(n("/api/health\\..\\admin"), None);
        assert_eq!(n("/api/%zz"), None);
        assert_eq!(n("/api/%2"), None);
        assert_eq!(n("/api/%00"), None);
        assert_eq!(n("api/health"), None);
        assert_eq!(n("*"), None);
        assert_eq!(n("/é/%C3%A9").as_deref(), Some("/é/%C3%A9"));
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(under("/api/health", "/api/health"));
        assert!(under("/api/health/x", "/api/health"));
        assert!(!under("/api/healthz", "/api/health"));
        assert!(under("/assets/x.js", "/assets/"));
        assert!(!under("/assets", "/assets/"));
        assert!(under("/anything", "/"));
        let p = vec!["/api/health".to_string()];
        assert!(under_any("/api/health", &p));
        assert!(!under_any("/api/health/../../admin", &p));
        assert!(!under_any("/api/health/%2e%2e/%2e%2e/admin", &p));
        assert!(!under_any("/api/health%2f..%2f..%2fadmin", &p));
        assert!(!under_any("/api/healthcheck-admin", &p));
        assert!(under_any("/api/./health/", &p));
        assert!(!under_any("/api/health", &[]));
    }
}
