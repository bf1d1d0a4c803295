//! A request under `[cache] prefixes`: served from memory when its pool's copy is fresh (even
//! with every upstream down), else fetched once however many clients ask at the same moment
//! (moka's `try_get_with` runs one fetch per key; the others wait for it) and kept when its
//! `Cache-Control` allows.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Method, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use turnout_config::ServerAddr;
use turnout_core::{InFlight, Pool};

use crate::access::Access;
use crate::body::ProxyBody;
use crate::cache::{lifetime, none_match, vary_names, Asset, AssetKey, Entry, Key};
use crate::downstream::Downstream;
use crate::error::ProxyError;
use crate::forward::Forwarder;
use crate::headers::strip_hop_by_hop;

/// What a fetch that was not kept gives every client that waited on it.
#[derive(Debug)]
pub(crate) enum NotKept {
    /// A response not to be cached (status, Cache-Control, Set-Cookie, Vary), read whole. The
    /// request that fetched it gets it; so does every waiter that sent the same values of the
    /// headers it varies on (the others fetch their own).
    Small {
        fetched_by: u64,
        head: http::response::Parts,
        body: bytes::Bytes,
        /// `None` for `Vary: *`: nobody else may share it.
        varied: Option<Vec<(HeaderName, Option<HeaderValue>)>>,
    },
    /// Too large to hold (or of unknown length): the request that fetched it streams it, the
    /// others fetch their own.
    Large {
        fetched_by: u64,
        response: Mutex<Option<(Response<Incoming>, InFlight)>>,
    },
    /// The fetch failed: every request that waited on it is answered as a failed forward,
    /// with this error and the server it was last sent to.
    Failed(ProxyError, Option<ServerAddr>),
}

/// A failure shared by the requests that waited on one fetch, as each one's access record.
#[derive(Debug)]
struct SharedFailure(Arc<NotKept>);

impl SharedFailure {
    fn error(&self) -> Option<&ProxyError> {
        match &*self.0 {
            NotKept::Failed(e, _) => Some(e),
            _ => None,
        }
    }
}

impl std::fmt::Display for SharedFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.error() {
            Some(e) => e.fmt(f),
            None => f.write_str("the fetch failed"),
        }
    }
}

impl std::error::Error for SharedFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error().and_then(std::error::Error::source)
    }
}

/// Numbers each cached-path request, so that of the requests waiting on one fetch, the one that
/// made it is known.
static REQUEST_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl crate::cache::Cache {
    /// A GET or HEAD without a body under `[cache] prefixes`, with no credentials and asking
    /// for no upgrade: served through the cache.
    pub(crate) fn takes<B: http_body::Body>(&self, req: &http::Request<B>, upgrade: bool) -> bool {
        matches!(*req.method(), Method::GET | Method::HEAD)
            && self.covers(req.uri().path())
            && req.body().is_end_stream()
            && !req.headers().contains_key(header::AUTHORIZATION)
            && !upgrade
    }
}

impl crate::cache::Cache {
    /// Serves a GET or HEAD (without a body) under a cached prefix from pool `pool`, its
    /// verdict (`HIT`, `MISS`), server and failure recorded in `access` as a forward's are.
    pub(crate) async fn cached(
        &self,
        forwarder: &Forwarder,
        parts: Parts,
        pool: &Arc<Pool>,
        down: &Downstream,
        access: &mut Access,
    ) -> Response<ProxyBody> {
        let cache = self;
        let asset = AssetKey {
            pool: pool.name().clone(),
            generation: pool.generation(),
            method: parts.method.clone(),
            // The request's one Host (`normalize_request`), an HTTP/2 `:authority` included:
            // what is forwarded is what is keyed on.
            host: parts.headers.get(header::HOST).cloned(),
            target: parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        };
        let vary = cache.vary_of(&asset);
        let vary = vary.as_deref().unwrap_or_default();
        let values = vary.iter().map(|n| parts.headers.get(n).cloned()).collect();
        let key = Key::Asset(asset, values);

        if let Some(Entry::Asset(a)) = cache.entries.get(&key).await {
            let now = Instant::now();
            if now < a.expires {
                cache.hit();
                access.cache = Some("HIT");
                return self.answer_from_memory(&a, &parts, "HIT", now);
            }
            // Boxed, as the miss below: expiry is rare, and moka's future is large.
            Box::pin(cache.entries.invalidate(&key)).await;
        }
        // Boxed: the miss path (moka's coalescing, the fetch, the hyper client) is a future of
        // several KiB; inline, it would grow every request's future, proxied ones too, by that
        // much. A miss pays one allocation; a hit, and every other request, none.
        access.cache = Some("MISS");
        Box::pin(self.fill(forwarder, key, vary, parts, pool, down, access)).await
    }

    /// A cache miss: fetched once for every request waiting on `key`, kept if it may be.
    #[allow(clippy::too_many_arguments)]
    async fn fill(
        &self,
        forwarder: &Forwarder,
        key: Key,
        vary: &[HeaderName],
        parts: Parts,
        pool: &Arc<Pool>,
        down: &Downstream,
        access: &mut Access,
    ) -> Response<ProxyBody> {
        let cache = self;
        cache.miss();
        let id = REQUEST_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Key::Asset(asset, _) = &key else {
            unreachable!("built as an asset key above")
        };
        let fetch = self.fetch_to_keep(forwarder, id, pool, &parts, down, asset.clone(), vary);
        let not_kept = match cache.entries.try_get_with(key, fetch).await {
            Ok(Entry::Asset(a)) => {
                return self.answer_from_memory(&a, &parts, "MISS", Instant::now())
            }
            Ok(Entry::File(_)) => unreachable!("asset keys hold assets"),
            Err(not_kept) => not_kept,
        };
        let own = match &*not_kept {
            NotKept::Failed(e, upstream) => {
                // Answered as a failed forward: the same status and page, no cookie, the
                // error and the server on the access line.
                let resp = e.into_response(false);
                access.upstream.clone_from(upstream);
                access.failed(SharedFailure(Arc::clone(&not_kept)));
                return resp;
            }
            NotKept::Small {
                fetched_by,
                head,
                body,
                varied,
            } => {
                let same = *fetched_by == id
                    || varied.as_ref().is_some_and(|v| {
                        v.iter()
                            .all(|(name, value)| parts.headers.get(name) == value.as_ref())
                    });
                if same {
                    let mut resp =
                        Response::from_parts(head.clone(), ProxyBody::bytes(body.clone()));
                    if parts.method == Method::HEAD {
                        *resp.body_mut() = ProxyBody::empty();
                    }
                    mark(&mut resp, "MISS");
                    return resp;
                }
                None
            }
            NotKept::Large {
                fetched_by,
                response,
            } if *fetched_by == id => response
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
            NotKept::Large { .. } => None,
        };
        // Not shareable with this request: it streams what it fetched, or fetches its own.
        let fetched = match own {
            Some(f) => Ok(f),
            None => {
                forwarder
                    .forward(pool, parts, None, false, None, down, &mut access.upstream)
                    .await
            }
        };
        match fetched {
            Ok((resp, guard)) => {
                let mut resp = forwarder.respond(resp, guard, None);
                mark(&mut resp, "MISS");
                resp
            }
            Err(e) => access.fail(e, false, &forwarder.env().metrics),
        }
    }

    /// The fetch behind a miss: the upstream's answer, as an entry to keep, or why not.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_to_keep(
        &self,
        forwarder: &Forwarder,
        id: u64,
        pool: &Arc<Pool>,
        parts: &Parts,
        down: &Downstream,
        asset: AssetKey,
        vary: &[HeaderName],
    ) -> Result<Entry, NotKept> {
        // The whole answer, whatever this client's validators or range: the cache answers
        // those itself, and the waiters may not have sent the same ones.
        let mut full = parts.clone();
        for name in [
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_MATCH,
            header::IF_UNMODIFIED_SINCE,
            header::RANGE,
            header::IF_RANGE,
        ] {
            full.headers.remove(name);
        }
        let mut used = None;
        let (resp, guard) = match forwarder
            .forward(pool, full, None, false, None, down, &mut used)
            .await
        {
            Ok(answer) => answer,
            Err(e) => return Err(NotKept::Failed(e, used)),
        };
        let length = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let fits = parts.method == Method::HEAD || length.is_some_and(|l| l <= self.max_object);
        if !fits {
            return Err(NotKept::Large {
                fetched_by: id,
                response: Mutex::new(Some((resp, guard))),
            });
        }
        let (mut head, body) = resp.into_parts();
        strip_hop_by_hop(&mut head.headers, false);
        head.version = Version::HTTP_11;
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return Err(NotKept::Failed(
                    ProxyError::Body {
                        pool: pool.name().to_string(),
                        source: e,
                    },
                    used,
                ))
            }
        };
        drop(guard);
        // Keep it only if the response says for how long, carries no cookie, and varies on
        // the headers this key was made with (if not, learn them: the next request keys right).
        let ttl = lifetime(&head.headers).filter(|_| {
            head.status == StatusCode::OK && !head.headers.contains_key(header::SET_COOKIE)
        });
        let varies = vary_names(&head.headers);
        let same_vary = varies.as_deref() == Some(vary);
        if let (Some(names), false) = (&varies, same_vary) {
            self.learn_vary(asset, Arc::from(names.as_slice()));
        }
        match ttl {
            Some(ttl) if same_vary => {
                let now = Instant::now();
                let mut headers = head.headers;
                // Slots for the two headers every answer from memory sets: filled in place
                // then, so the copy of this map made per hit never grows.
                headers.insert(header::AGE, HeaderValue::from_static("0"));
                headers.insert(X_CACHE, HeaderValue::from_static("HIT"));
                let compressible = self.compressor.as_ref().is_some_and(|c| {
                    let mut probe = Response::new(());
                    *probe.headers_mut() = headers.clone();
                    c.compressible(&probe)
                });
                Ok(Entry::Asset(Arc::new(Asset {
                    variant_budget: if compressible { body.len() } else { 0 },
                    headers,
                    body,
                    stored: now,
                    expires: now + ttl,
                    variants: Default::default(),
                    started: Default::default(),
                    variant_bytes: Default::default(),
                })))
            }
            _ => {
                let varied = varies.map(|names| {
                    names
                        .into_iter()
                        .map(|n| {
                            let v = parts.headers.get(&n).cloned();
                            (n, v)
                        })
                        .collect()
                });
                Err(NotKept::Small {
                    fetched_by: id,
                    head,
                    body,
                    varied,
                })
            }
        }
    }
}

impl crate::cache::Cache {
    /// A response from a kept entry: 304 when the client's ETag matches, else the whole entry,
    /// or its compressed variant when the client takes that encoding and it is made (the
    /// first such request starts making it, and is compressed on the fly meanwhile).
    fn answer_from_memory(
        &self,
        asset: &Arc<Asset>,
        req: &Parts,
        label: &'static str,
        now: Instant,
    ) -> Response<ProxyBody> {
        let mut resp = Response::new(ProxyBody::empty());
        *resp.headers_mut() = asset.headers.clone();
        let etag = asset.headers.get(header::ETAG);
        if etag.is_some_and(|e| none_match(&req.headers, e)) {
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            resp.headers_mut().remove(header::CONTENT_LENGTH);
        } else if let Some((variant, encoding)) = self.variant(asset, req) {
            crate::compress::mark_encoded(resp.headers_mut(), encoding);
            crate::compress::add_vary(resp.headers_mut());
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(variant.len()));
            if req.method != Method::HEAD {
                *resp.body_mut() = ProxyBody::bytes(variant);
            }
            if let Some(env) = &self.metrics {
                env.metrics.compressed(encoding.token(), "cache");
            }
        } else if req.method != Method::HEAD {
            *resp.body_mut() = ProxyBody::bytes(asset.body.clone());
        }
        resp.headers_mut().insert(
            header::AGE,
            HeaderValue::from(now.saturating_duration_since(asset.stored).as_secs()),
        );
        mark(&mut resp, label);
        resp
    }

    /// The variant of `asset` in the encoding `req` takes, if it is made; else starts making
    /// it (once, in the background, at the best level) unless that would pass its budget.
    fn variant(
        &self,
        asset: &Arc<Asset>,
        req: &Parts,
    ) -> Option<(bytes::Bytes, turnout_config::Encoding)> {
        use std::sync::atomic::Ordering;
        if asset.variant_budget == 0 {
            return None;
        }
        let compressor = self.compressor.as_ref()?;
        let encoding = compressor
            .wanted(&req.headers, req.method == Method::HEAD)
            .encoding?;
        let i = encoding.index();
        if let Some(v) = asset.variants[i].get() {
            return Some((v.clone(), encoding));
        }
        if !asset.started[i].swap(true, Ordering::AcqRel) {
            let asset = Arc::clone(asset);
            tokio::spawn(async move {
                // CPU work: on a blocking thread, not a request's worker.
                let body = asset.body.clone();
                let made = tokio::task::spawn_blocking(move || {
                    tokio::runtime::Handle::current()
                        .block_on(crate::compress::encode_bytes(body, encoding))
                })
                .await;
                let Ok(Ok(variant)) = made else { return };
                let held = asset
                    .variant_bytes
                    .fetch_add(variant.len(), Ordering::AcqRel);
                // Kept only within the budget the entry was weighed with, and only if smaller.
                if held + variant.len() <= asset.variant_budget && variant.len() < asset.body.len()
                {
                    let _ = asset.variants[i].set(variant);
                } else {
                    asset
                        .variant_bytes
                        .fetch_sub(variant.len(), Ordering::AcqRel);
                }
            });
        }
        None
    }
}

const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

fn mark(resp: &mut Response<ProxyBody>, label: &'static str) {
    resp.headers_mut()
        .insert(X_CACHE, HeaderValue::from_static(label));
}
