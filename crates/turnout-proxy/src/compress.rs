//! `[compression]` at work: the encoding a request accepts (`Accept-Encoding` with its
//! q-values), whether a response may be compressed, and the body compressed as it streams
//! (`async-compression`), at a low level for dynamic bodies; cached assets get a high-level
//! variant made once per asset (per deployed version: the cache's key carries it).

use std::io;

use async_compression::Level;
use bytes::Bytes;
use futures_util::TryStreamExt;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use turnout_config::{Compression, Encoding};

use crate::body::ProxyBody;

/// What one request asked for: the encoding chosen, and whether it was a HEAD (the headers
/// say what a GET would get, and there is no body to compress).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wanted {
    pub encoding: Option<Encoding>,
    pub head: bool,
}

/// The compressor of the data plane.
#[derive(Debug)]
pub(crate) struct Compressor {
    config: Compression,
}

/// How hard to compress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effort {
    /// Dynamic bodies, compressed while the client waits: gzip 1, zstd 1, brotli 2.
    Fast,
    /// Cached assets, compressed once in the background: gzip 9, zstd 19, brotli 11.
    Best,
}

fn level(encoding: Encoding, effort: Effort) -> Level {
    match (encoding, effort) {
        (Encoding::Gzip | Encoding::Zstd, Effort::Fast) => Level::Precise(1),
        (Encoding::Brotli, Effort::Fast) => Level::Precise(2),
        (Encoding::Gzip, Effort::Best) => Level::Precise(9),
        (Encoding::Zstd, Effort::Best) => Level::Precise(19),
        (Encoding::Brotli, Effort::Best) => Level::Precise(11),
    }
}

impl Compressor {
    pub fn new(config: &Compression) -> Compressor {
        Compressor {
            config: config.clone(),
        }
    }

    /// What the request asks for. A range request is answered uncompressed, so that its byte
    /// ranges are those of the representation the validators name.
    pub fn wanted(&self, headers: &HeaderMap, head: bool) -> Wanted {
        let encoding = if headers.contains_key(header::RANGE) {
            None
        } else {
            negotiate(headers, &self.config.encodings)
        };
        Wanted { encoding, head }
    }

    /// Whether `resp` is one turnout would compress: a 200 of a listed type, over the minimum
    /// size, not encoded already, not a range, not marked `no-transform`.
    pub fn compressible<B>(&self, resp: &Response<B>) -> bool {
        let h = resp.headers();
        resp.status() == StatusCode::OK
            && !h.contains_key(header::CONTENT_ENCODING)
            && !h.contains_key(header::CONTENT_RANGE)
            && self.listed_type(h)
            && h.get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .is_none_or(|len| len >= self.config.min_size)
            && !h
                .get_all(header::CACHE_CONTROL)
                .iter()
                .any(|v| contains_token(v.as_bytes(), b"no-transform"))
    }

    fn listed_type(&self, h: &HeaderMap) -> bool {
        let Some(ct) = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let essence = ct.split(';').next().unwrap_or("").trim();
        self.config
            .types
            .iter()
            .any(|t| match t.strip_suffix("/*") {
                Some(top) => essence
                    .split_once('/')
                    .is_some_and(|(a, _)| a.eq_ignore_ascii_case(top)),
                None => essence.eq_ignore_ascii_case(t),
            })
            && !essence.eq_ignore_ascii_case("text/event-stream")
    }

    /// Compresses `resp` as `wanted` says, if it may be; a compressible response says
    /// `Vary: Accept-Encoding` either way (a shared cache must not give one client's variant
    /// to another). `true`: it was compressed.
    pub fn apply(&self, resp: &mut Response<ProxyBody>, wanted: Wanted) -> bool {
        if !self.compressible(resp) {
            return false;
        }
        add_vary(resp.headers_mut());
        let Some(encoding) = wanted.encoding else {
            return false;
        };
        mark_encoded(resp.headers_mut(), encoding);
        if !wanted.head {
            let body = std::mem::replace(resp.body_mut(), ProxyBody::empty());
            *resp.body_mut() = encode(body, encoding, Effort::Fast);
        }
        true
    }
}

/// The headers of an encoded variant: its `Content-Encoding`, no length (it streams), no
/// byte ranges, and a weak `ETag` (the bytes differ from the original's).
pub(crate) fn mark_encoded(h: &mut HeaderMap, encoding: Encoding) {
    h.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(encoding.token()),
    );
    h.remove(header::CONTENT_LENGTH);
    h.remove(header::ACCEPT_RANGES);
    if let Some(tag) = h.get(header::ETAG) {
        if !tag.as_bytes().starts_with(b"W/") {
            let mut weak = b"W/".to_vec();
            weak.extend_from_slice(tag.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&weak) {
                h.insert(header::ETAG, v);
            }
        }
    }
}

/// `Vary: Accept-Encoding`, unless the response varies on it (or on everything) already.
pub(crate) fn add_vary(h: &mut HeaderMap) {
    let already = h.get_all(header::VARY).iter().any(|v| {
        contains_token(v.as_bytes(), b"accept-encoding") || contains_token(v.as_bytes(), b"*")
    });
    if !already {
        h.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
}

/// `body` compressed with `encoding` as it streams: each chunk goes through the encoder as it
/// comes, so a large or slow body is never held whole.
pub(crate) fn encode(body: ProxyBody, encoding: Encoding, effort: Effort) -> ProxyBody {
    use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder, ZstdEncoder};
    let data = body
        .into_data_stream()
        .map_err(|e| io::Error::other(e.to_string()));
    let reader = tokio_util::io::StreamReader::new(data);
    let level = level(encoding, effort);
    match encoding {
        Encoding::Gzip => ProxyBody::encoded(GzipEncoder::with_quality(reader, level)),
        Encoding::Brotli => ProxyBody::encoded(BrotliEncoder::with_quality(reader, level)),
        Encoding::Zstd => ProxyBody::encoded(ZstdEncoder::with_quality(reader, level)),
    }
}

/// `data` compressed whole with `encoding` at the best level (a cached asset's variant; run off
/// the request path).
pub(crate) async fn encode_bytes(data: Bytes, encoding: Encoding) -> io::Result<Bytes> {
    let body = encode(ProxyBody::bytes(data), encoding, Effort::Best);
    let collected = body
        .collect()
        .await
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok(collected.to_bytes())
}

/// The encoding to answer `Accept-Encoding` with, from `offered` (best first): the one with the
/// highest q-value; on a tie, the first offered. `*` stands for encodings not named; `q=0`
/// refuses one. Written by hand: the `headers` crate has no typed `Accept-Encoding`, and this
/// reads the header without allocating.
pub(crate) fn negotiate(headers: &HeaderMap, offered: &[Encoding]) -> Option<Encoding> {
    let mut best: Option<(Encoding, u16)> = None;
    for enc in offered {
        let mut named = None;
        let mut star = None;
        for value in headers.get_all(header::ACCEPT_ENCODING) {
            let Ok(value) = value.to_str() else { continue };
            for item in value.split(',') {
                let mut parts = item.split(';');
                let token = parts.next().unwrap_or("").trim();
                let q = parts
                    .find_map(|p| {
                        let (k, v) = p.split_once('=')?;
                        k.trim()
                            .eq_ignore_ascii_case("q")
                            .then(|| parse_q(v.trim()))
                    })
                    .unwrap_or(Some(1000));
                let Some(q) = q else { continue };
                if token.eq_ignore_ascii_case(enc.token()) {
                    named = Some(named.map_or(q, |n: u16| n.max(q)));
                } else if token == "*" {
                    star = Some(q);
                }
            }
        }
        let q = named.or(star).unwrap_or(0);
        if q > 0 && best.is_none_or(|(_, b)| q > b) {
            best = Some((*enc, q));
        }
    }
    best.map(|(e, _)| e)
}

/// A q-value in thousandths ("0.5" -> 500); `None` for one that is not a q-value.
fn parse_q(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // "5" is 500 thousandths, "05" is 50, "005" is 5.
    let frac_val = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    match int {
        "0" => Some(frac_val),
        "1" if frac_val == 0 => Some(1000),
        _ => None,
    }
}

/// Whether a comma-separated header value lists `token` (ASCII case-insensitive).
fn contains_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .map(|t| t.split(|b| *b == b'=').next().unwrap_or(t).trim_ascii())
        .any(|t| t.eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(v).expect("value"),
        );
        h
    }

    const ALL: &[Encoding] = &[Encoding::Brotli, Encoding::Zstd, Encoding::Gzip];

    #[test]
    fn q_values_pick_the_encoding_and_ties_go_to_the_server_order() {
        let pick = |v: &str| negotiate(&accept(v), ALL).map(Encoding::token);
        assert_eq!(pick("gzip, deflate, br, zstd"), Some("br"));
        assert_eq!(pick("gzip, deflate"), Some("gzip"));
        assert_eq!(pick("br;q=0.5, gzip;q=0.9"), Some("gzip"));
        assert_eq!(pick("br;q=0, gzip;q=0"), None);
        assert_eq!(pick("*"), Some("br"));
        assert_eq!(pick("*;q=0.2, br;q=0"), Some("zstd"));
        assert_eq!(pick("identity"), None);
        assert_eq!(pick(""), None);
        assert_eq!(pick("GZIP;Q=1.0"), Some("gzip"));
        // Malformed q-values are ignored, not taken as 1.
        assert_eq!(pick("br;q=2, gzip;q=0.001"), Some("gzip"));
        assert_eq!(pick("br;q=abc"), None);
        assert_eq!(pick(&"x, ".repeat(2000)), None);
        assert_eq!(negotiate(&HeaderMap::new(), ALL), None);
        assert_eq!(
            negotiate(&accept("br, gzip"), &[Encoding::Gzip, Encoding::Brotli])
                .map(Encoding::token),
            Some("gzip")
        );
    }

    #[test]
    fn q_values_parse_to_thousandths() {
        assert_eq!(parse_q("1"), Some(1000));
        assert_eq!(parse_q("1.000"), Some(1000));
        assert_eq!(parse_q("0.5"), Some(500));
        assert_eq!(parse_q("0.125"), Some(125));
        assert_eq!(parse_q("0"), Some(0));
        for bad in ["1.5", "0.1234", "2", "", "-0.5", "0.x"] {
            assert_eq!(parse_q(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_encoded_variant_has_a_weak_etag_no_length_and_varies() {
        let mut h = HeaderMap::new();
        h.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("100"));
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        h.insert(header::VARY, HeaderValue::from_static("Cookie"));
        mark_encoded(&mut h, Encoding::Gzip);
        add_vary(&mut h);
        assert_eq!(h[header::ETAG], "W/\"v1\"");
        assert_eq!(h[header::CONTENT_ENCODING], "gzip");
        assert!(!h.contains_key(header::CONTENT_LENGTH));
        assert!(!h.contains_key(header::ACCEPT_RANGES));
        let vary: Vec<_> = h.get_all(header::VARY).iter().collect();
        assert_eq!(vary, ["Cookie", "accept-encoding"]);
        // Once is enough.
        add_vary(&mut h);
        assert_eq!(h.get_all(header::VARY).iter().count(), 2);
    }
}
