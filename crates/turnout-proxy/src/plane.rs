//! [`DataPlane`]: the handle the binary holds, built from the router and the settings; it
//! serves the listeners (`listener.rs`), hands the cache to the admin API, and starts the drain.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use turnout_core::Router;

use crate::cache::Cache;
use crate::forward::conns::Upstreams;
use crate::forward::Forwarder;
use crate::local::files::StaticFiles;
use crate::local::pages::Pages;
use crate::local::Local;
use crate::proxy::Proxy;
use crate::settings::ProxySettings;

/// The most an upstream connection buffers (see `DataPlane::new`).
const UPSTREAM_MAX_BUF: usize = 64 * 1024;

/// The data plane. Cheap to clone; every clone is the same proxy.
#[derive(Debug, Clone)]
pub struct DataPlane {
    pub(crate) shared: Arc<Proxy>,
}

impl DataPlane {
    /// The data plane over `router`'s routing state, with `settings`; it serves once given its
    /// listeners (`DataPlane::serve`).
    pub fn new(router: Router, settings: ProxySettings) -> DataPlane {
        // hyper grows a connection's read buffer up to ~400 KiB while a body streams, and a
        // client that stops reading leaves it (and a frame as large) held: 64 KiB bounds what
        // one slow reader costs (about 240 KiB in all, against ~1 MiB before), and still takes a
        // response head eight times nginx's default proxy_buffer_size. (32 KiB saved another
        // 50 KiB per slow reader, but split every 60 kB cached asset in two reads, and the
        // copies that joined them raised the cache's peak memory.)
        let upstreams = Upstreams::new(
            &settings.upstream_tls,
            settings.upstream.connect_timeout,
            settings.upstream.idle_timeout,
            settings.upstream.max_idle_per_server,
            UPSTREAM_MAX_BUF,
        );
        let metrics = &router.snapshot().env.metrics;
        let compressor = settings
            .compression
            .as_ref()
            .map(|c| Arc::new(crate::compress::Compressor::new(c)));
        let cache = Arc::new(
            Cache::new(&settings.cache)
                .with_metrics(metrics.cache_hits.clone(), metrics.cache_misses.clone())
                .with_compression(compressor.clone(), Arc::clone(&router.snapshot().env)),
        );
        let local = Local::new(
            StaticFiles::new(&settings.statics, Arc::clone(&cache)),
            settings.redirect_https_port,
        );
        let env = Arc::clone(&router.snapshot().env);
        DataPlane {
            shared: Arc::new(Proxy {
                pages: Pages::new(&settings.error_pages),
                cache,
                local,
                forwarder: Forwarder::new(
                    upstreams,
                    Arc::clone(&env),
                    settings.upstream.response_timeout,
                    settings.upstream.hold_when_unavailable,
                    settings.upstream.body_timeout,
                ),
                limiter: crate::limits::Limiter::new(&settings.limits),
                gate: crate::auth::Gate::new(&settings.auth, &settings.upstream_tls),
                compressor,
                env,
                router,
                settings,
                draining: AtomicBool::new(false),
                handed_over: AtomicBool::new(false),
            }),
        }
    }

    /// The cache, for the admin API (given to `Control` at its construction).
    pub fn cache(&self) -> Arc<dyn turnout_core::CacheAdmin> {
        Arc::clone(&self.shared.cache) as Arc<dyn turnout_core::CacheAdmin>
    }

    /// Starts the shutdown: the health path answers 503 so the load balancer stops sending, and
    /// HTTP/1 responses carry `Connection: close` so keep-alive clients move elsewhere.
    pub fn start_draining(&self) {
        self.shared.draining.store(true, Ordering::Relaxed);
    }

    /// Another process took over the listening sockets (call before the serve's shutdown
    /// completes): the health path keeps answering (the load balancer still reaches this
    /// instance, through the new process), and the drain closes a quiet HTTP/1 keep-alive
    /// connection only after a response saying `Connection: close`, or at its idle timeout,
    /// never while a client may be sending on it; HTTP/2 ones get GOAWAY at once.
    pub fn handed_over(&self) {
        self.shared.handed_over.store(true, Ordering::Relaxed);
    }
}
