//! The in-memory cache: upstream assets under `[cache] prefixes`, and the contents of static
//! files, in one moka cache bounded in bytes (a weigher). An asset's key carries the pool and
//! the pool's generation, so a switch never serves the other version's copy, a rollback finds
//! the old version's copies still warm, and a redeployed pool (new servers) starts cold.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method};
use turnout_config::PoolName;
use turnout_core::{CacheAdmin, CacheStats};

mod lookup;

/// Everything a cached upstream response is filed under, but for its Vary'd headers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct AssetKey {
    pub pool: PoolName,
    pub generation: u64,
    pub method: Method,
    pub host: Option<HeaderValue>,
    /// Path and query, as the client sent them (a handle on the request's own bytes).
    pub target: PathAndQuery,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    /// An upstream response, with the values of the request headers its `Vary` names.
    Asset(AssetKey, Vec<Option<HeaderValue>>),
    /// A static file's contents (the path of the file sent, precompressed sibling or not).
    File(PathBuf),
}

/// A cached upstream response, and its compressed variants (`[compression]`), made once each
/// in the background and kept with it, so they go with the entry (one deployed version's).
#[derive(Debug)]
pub(crate) struct Asset {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub stored: Instant,
    pub expires: Instant,
    /// Per encoding (`Encoding::index`): the body compressed at the best level, once made.
    pub variants: [std::sync::OnceLock<Bytes>; 3],
    /// Per encoding: its variant is being made (or was given up on).
    pub started: [AtomicBool; 3],
    /// The bytes the variants may hold together (counted in the entry's weight from the
    /// start): the body's length when it is compressible, else 0.
    pub variant_budget: usize,
    /// Bytes the variants hold now.
    pub variant_bytes: std::sync::atomic::AtomicUsize,
}

/// A cached file: its bytes, and the size and time they were read at (a change of either on
/// disk makes them stale).
#[derive(Debug)]
pub(crate) struct FileData {
    pub body: Bytes,
    pub size: u64,
    pub modified: SystemTime,
}

#[derive(Debug, Clone)]
pub(crate) enum Entry {
    Asset(Arc<Asset>),
    File(Arc<FileData>),
}

impl Entry {
    fn weight(&self) -> u32 {
        // The bytes held, plus a rough allowance for the key, headers and moka's own records,
        // so a flood of tiny entries is bounded too.
        let bytes = match self {
            Entry::Asset(a) => a.body.len() + a.variant_budget + a.headers.len() * 64 + 256,
            Entry::File(f) => f.body.len() + 256,
        };
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }
}

/// Upstream assets and static files in memory (moka), bounded in bytes, with the counters of
/// its hits and misses.
#[derive(Debug)]
pub struct Cache {
    pub(crate) entries: moka::future::Cache<Key, Entry, ahash::RandomState>,
    /// The header names each asset's responses vary on, learnt from its last response.
    vary: moka::sync::Cache<AssetKey, Arc<[HeaderName]>, ahash::RandomState>,
    /// Has any response ever varied? Until one has, `vary` is empty and a hit makes one lookup.
    vary_learnt: AtomicBool,
    prefixes: Box<[String]>,
    pub(crate) max_object: u64,
    max_bytes: u64,
    /// Counted once, in these: the status reads them back, `/metrics` renders them (when
    /// [`Cache::with_metrics`] gave the registry's own).
    hits: prometheus::IntCounter,
    misses: prometheus::IntCounter,
    /// `[compression]`: assets' variants are made and served from here.
    pub(crate) compressor: Option<Arc<crate::compress::Compressor>>,
    /// `turnout_compressed_total`, for the variants served.
    pub(crate) metrics: Option<Arc<turnout_core::Env>>,
}

impl Cache {
    /// An empty cache with `[cache]`'s bounds and prefixes.
    pub fn new(config: &turnout_config::Cache) -> Cache {
        let entries = moka::future::Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(|_k: &Key, v: &Entry| v.weight())
            // aHash instead of the default SipHash: keys are hashed twice per request, and
            // aHash's per-process random keys still resist crafted collisions.
            .build_with_hasher(ahash::RandomState::new());
        let vary = moka::sync::Cache::builder()
            .max_capacity(10_000)
            .build_with_hasher(ahash::RandomState::new());
        Cache {
            entries,
            vary,
            vary_learnt: AtomicBool::new(false),
            prefixes: config.prefixes.clone().into_boxed_slice(),
            max_object: config.max_object,
            max_bytes: config.max_bytes,
            hits: unregistered("turnout_cache_hits_total"),
            misses: unregistered("turnout_cache_misses_total"),
            compressor: None,
            metrics: None,
        }
    }

    /// Keeps compressed variants of compressible assets, made with `compressor`, counted in
    /// `env`'s metrics.
    pub(crate) fn with_compression(
        mut self,
        compressor: Option<Arc<crate::compress::Compressor>>,
        env: Arc<turnout_core::Env>,
    ) -> Cache {
        self.compressor = compressor;
        self.metrics = Some(env);
        self
    }

    /// Counts hits and misses in these Prometheus counters (the registry's).
    pub fn with_metrics(
        mut self,
        hits: prometheus::IntCounter,
        misses: prometheus::IntCounter,
    ) -> Cache {
        self.hits = hits;
        self.misses = misses;
        self
    }

    /// Is a request for `path` one whose upstream response may be cached?
    #[inline]
    pub(crate) fn covers(&self, path: &str) -> bool {
        // Normalised, on segment boundaries: `/assets/../api/me` is not an asset, and its
        // answer must not be kept for everyone.
        turnout_core::path::under_any(path, &self.prefixes)
    }

    pub(crate) fn hit(&self) {
        self.hits.inc();
    }

    pub(crate) fn miss(&self) {
        self.misses.inc();
    }

    /// The header names `key`'s responses vary on (none until a response said otherwise).
    pub(crate) fn vary_of(&self, key: &AssetKey) -> Option<Arc<[HeaderName]>> {
        if !self.vary_learnt.load(Ordering::Relaxed) {
            return None;
        }
        self.vary.get(key)
    }

    pub(crate) fn learn_vary(&self, key: AssetKey, names: Arc<[HeaderName]>) {
        // Raised before the insert; a lookup that misses the new names meanwhile only misses
        // (a response is kept only under the Vary it was looked up with).
        self.vary_learnt.store(true, Ordering::Relaxed);
        self.vary.insert(key, names);
    }
}

impl CacheAdmin for Cache {
    fn purge<'a>(
        &'a self,
        pool: Option<&'a str>,
        prefix: Option<&'a str>,
    ) -> Pin<Box<dyn Future<Output = u64> + Send + 'a>> {
        Box::pin(async move {
            self.entries.run_pending_tasks().await;
            if pool.is_none() && prefix.is_none() {
                let count = self.entries.entry_count();
                self.entries.invalidate_all();
                self.vary.invalidate_all();
                self.entries.run_pending_tasks().await;
                return count;
            }
            let doomed: Vec<Arc<Key>> = self
                .entries
                .iter()
                .filter(|(k, _)| match &**k {
                    Key::Asset(a, _) => {
                        pool.is_none_or(|p| a.pool.as_str() == p)
                            && prefix.is_none_or(|p| a.target.as_str().starts_with(p))
                    }
                    Key::File(_) => false,
                })
                .map(|(k, _)| k)
                .collect();
            let mut purged = 0;
            for key in doomed {
                if self.entries.remove(&*key).await.is_some() {
                    purged += 1;
                }
            }
            self.entries.run_pending_tasks().await;
            purged
        })
    }

    fn stats(&self) -> Pin<Box<dyn Future<Output = CacheStats> + Send + '_>> {
        Box::pin(async move {
            self.entries.run_pending_tasks().await;
            CacheStats {
                bytes: self.entries.weighted_size(),
                max_bytes: self.max_bytes,
                entries: self.entries.entry_count(),
                hits: self.hits.get(),
                misses: self.misses.get(),
            }
        })
    }
}

/// How long a response may be served from the cache, by its `Cache-Control` (hyperium's
/// typed header): `s-maxage` or else `max-age`; `None` for `no-store`, `private`, `no-cache`
/// (which would need revalidation this cache does not do), a zero lifetime, no lifetime at
/// all, or a header that does not parse.
pub(crate) fn lifetime(headers: &HeaderMap) -> Option<Duration> {
    use headers::HeaderMapExt;
    let cc = headers.typed_get::<headers::CacheControl>()?;
    if cc.no_store() || cc.private() || cc.no_cache() {
        return None;
    }
    cc.s_max_age().or(cc.max_age()).filter(|d| !d.is_zero())
}

/// The header names a response's `Vary` lists (hyperium's typed header), lower case, sorted,
/// each once; `None` for `Vary: *` (never cacheable) or a `Vary` that does not parse.
pub(crate) fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    use headers::HeaderMapExt;
    let Some(vary) = headers.typed_get::<headers::Vary>() else {
        // No Vary at all varies on nothing; one that is there but unreadable is not trusted.
        return (!headers.contains_key(header::VARY)).then(Vec::new);
    };
    if vary.is_any() {
        return None;
    }
    let mut names = Vec::new();
    for name in vary.iter_strs() {
        if let Ok(n) = HeaderName::try_from(name.trim().to_ascii_lowercase()) {
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Some(names)
}

/// Does a request's `If-None-Match` name `etag` (or `*`)?
pub(crate) fn none_match(req: &HeaderMap, etag: &HeaderValue) -> bool {
    use headers::HeaderMapExt;
    // hyperium's typed headers: entity-tags are quoted strings that may hold commas, and a
    // list split on every comma (as this once did) cut such a tag in two.
    let Some(etag) = etag
        .to_str()
        .ok()
        .and_then(|e| e.parse::<headers::ETag>().ok())
    else {
        return false;
    };
    req.typed_get::<headers::IfNoneMatch>()
        .is_some_and(|inm| !inm.precondition_passes(&etag))
}

/// A counter of no registry, for a cache that was given none.
fn unregistered(name: &str) -> prometheus::IntCounter {
    prometheus::IntCounter::new(name, "a cache's count").expect("a valid metric")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn cache_control_decides_the_lifetime() {
        let secs =
            |cc: &'static str| lifetime(&headers(&[("cache-control", cc)])).map(|d| d.as_secs());
        assert_eq!(
            secs("public, max-age=31536000, immutable"),
            Some(31_536_000)
        );
        assert_eq!(secs("max-age=60, s-maxage=600"), Some(600));
        assert_eq!(secs("public, max-age=\"30\""), Some(30));
        for never in [
            "no-store",
            "private, max-age=60",
            "no-cache, max-age=60",
            "max-age=0",
            "public",
        ] {
            assert_eq!(secs(never), None, "{never}");
        }
        assert_eq!(lifetime(&HeaderMap::new()), None);
        // Malformed or huge: not kept.
        assert_eq!(secs("max-age=soon"), None);
        assert_eq!(secs("max-age=-5"), None);
        let huge: &'static str =
            Box::leak(format!("max-age={}", "9".repeat(5000)).into_boxed_str());
        assert_eq!(secs(huge), None);
    }

    #[test]
    fn vary_and_etags() {
        assert_eq!(
            vary_names(&headers(&[
                ("vary", "Accept-Encoding, Accept"),
                ("vary", "accept")
            ])),
            Some(vec![
                HeaderName::from_static("accept"),
                HeaderName::from_static("accept-encoding")
            ])
        );
        assert_eq!(vary_names(&headers(&[("vary", "*")])), None);
        assert_eq!(vary_names(&headers(&[("vary", "Accept, *")])), None);
        assert_eq!(vary_names(&HeaderMap::new()), Some(vec![]));
        let etag = HeaderValue::from_static("\"abc\"");
        assert!(none_match(
            &headers(&[("if-none-match", "\"x\", W/\"abc\"")]),
            &etag
        ));
        assert!(none_match(&headers(&[("if-none-match", "*")]), &etag));
        assert!(!none_match(
            &headers(&[("if-none-match", "\"abcd\"")]),
            &etag
        ));
        // An entity-tag may hold a comma: it is one tag, not two.
        let comma = HeaderValue::from_static("\"v1,gzip\"");
        assert!(none_match(
            &headers(&[("if-none-match", "W/\"x\", \"v1,gzip\"")]),
            &comma
        ));
        assert!(!none_match(
            &headers(&[("if-none-match", "\"v1\"")]),
            &comma
        ));
        assert!(!none_match(
            &headers(&[("if-none-match", "\"gzip\"")]),
            &comma
        ));
        // Unquoted (malformed) tags match nothing.
        assert!(!none_match(&headers(&[("if-none-match", "abc")]), &etag));
    }
}
