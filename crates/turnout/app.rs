//! Serving: config and state in (or taken over from a running turnout), listeners bound, the
//! data plane and the admin API running, signals handled, and the drain at the end (or the
//! hand-over to a new process). Exit codes: 0 after a clean shutdown or a hand-over, 64 for a
//! bad config (EX_USAGE), 65 for a bad state, certificate, key or CA file (EX_DATAERR), 73 when
//! the state file or the upgrade socket cannot be written (EX_CANTCREAT), 1 for anything else
//! (a port in use, a turnout already running with this state file).

use std::future::Future;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use turnout_config::Config;

use turnout_core::control::Probe;
use turnout_core::{Control, Handles, Router, RoutingSnapshot, StateFile};
use turnout_proxy::{CertStore, DataPlane, HttpProber, ProxySettings, TlsListener};

use crate::exit::{fail, EX_CANTCREAT, EX_DATAERR, EX_USAGE};

/// `turnout serve --config FILE [--takeover SOCKET]`.
pub fn serve(path: &Path, takeover: Option<&Path>) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            if let Some(socket) = takeover {
                crate::upgrade::report_failure_to(socket, &e.to_string());
            }
            return fail(EX_USAGE, &e);
        }
    };
    let _log = init_logging();
    let start = Start {
        config_path: Some(path.to_path_buf()),
        takeover: takeover.map(Path::to_path_buf),
    };
    run_blocking(config, start, |_| {})
}

/// How this process came to serve.
#[derive(Debug, Default)]
pub struct Start {
    /// The config file, for a new process started by an upgrade; without it, no upgrades.
    pub config_path: Option<PathBuf>,
    /// `--takeover SOCKET`: take the listening sockets over from the turnout there.
    pub takeover: Option<PathBuf>,
}

/// `turnout check --config FILE`.
pub fn check(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return fail(EX_USAGE, &e),
    };
    if let Some(problem) = state_dir_problem(&config) {
        return fail(EX_CANTCREAT, &problem);
    }
    let state = config.state.file.as_ref().map(StateFile::new);
    let saved = match state.as_ref().map(StateFile::load).transpose() {
        Ok(saved) => saved.flatten(),
        Err(e) => return fail(EX_DATAERR, &e),
    };
    let from_state = saved.is_some();
    let snapshot = match RoutingSnapshot::bootstrap(&config, saved) {
        Ok(snapshot) => snapshot,
        Err(e) => return fail(EX_DATAERR, &e),
    };
    // The files `serve` would read next: the pools' CAs and the listener's certificates.
    if let Err(e) = ProxySettings::from_config(&config) {
        return fail(EX_DATAERR, &e);
    }
    let mut certs = String::new();
    if let Some(tls) = &config.tls {
        match CertStore::load(&tls.certs, tls.reject_expired) {
            Ok(store) => {
                for c in store.infos() {
                    certs.push_str(&format!(
                        "\n  certificate {}: {} (expires {}, {} days left)",
                        c.cert,
                        c.names.join(", "),
                        c.not_after,
                        c.days_left
                    ));
                }
            }
            Err(e) => return fail(EX_DATAERR, &e),
        }
    }
    println!(
        "{}: ok. {} pool(s); {} would be active{}.{certs}",
        path.display(),
        snapshot.pools.len(),
        snapshot.active.name(),
        if from_state {
            " (from the state file)"
        } else {
            ""
        }
    );
    ExitCode::SUCCESS
}

/// Why the directories turnout writes into (the state file's, the upgrade socket's) cannot
/// be used, naming the directory and the key: missing, not a directory, or not writable by
/// this process. `check` and `serve` both ask, so `check` never says ok to a config that
/// `serve` then refuses.
fn state_dir_problem(config: &Config) -> Option<String> {
    let dirs = [
        ("[state] file", config.state.file.as_deref()),
        (
            "[server] upgrade_socket",
            config.server.upgrade_socket.as_deref(),
        ),
    ];
    for (key, file) in dirs {
        let Some(file) = file else { continue };
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let problem = match std::fs::metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "does not exist",
            Err(_) => "cannot be read",
            Ok(m) if !m.is_dir() => "is not a directory",
            Ok(_) => match rustix::fs::access(
                dir,
                rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
            ) {
                Ok(()) => continue,
                Err(_) => "is not writable by turnout's user",
            },
        };
        return Some(format!(
            "the directory {} of {key} ({}) {problem}: create it, owned by the user turnout runs as (under systemd: StateDirectory=turnout makes /var/lib/turnout)",
            dir.display(),
            file.display()
        ));
    }
    None
}

/// Builds the runtime and serves `config` until a signal; `on_ready` sees the bound addresses.
pub fn run_blocking(config: Config, start: Start, on_ready: impl FnOnce(&Bound)) -> ExitCode {
    // One worker: a current-thread runtime, with no work-stealing machinery at all (the
    // equivalent of nginx's `worker_processes 1`). More: tokio's multi-thread scheduler.
    let mut builder = if config.server.workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(config.server.workers);
        b
    };
    let runtime = builder
        .enable_all()
        .thread_name("turnout")
        .build()
        .expect("the tokio runtime starts");
    runtime.block_on(run_with(config, start, shutdown_signal(), on_ready))
}

/// The addresses turnout listens on.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    /// The HTTPS listener, with `[tls]`.
    pub tls: Option<SocketAddr>,
}

/// Serves until `signal` completes, then drains (no in-place upgrades: the demo).
pub async fn run(
    config: Config,
    signal: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(&Bound),
) -> ExitCode {
    run_with(config, Start::default(), signal, on_ready).await
}

/// Serves until `signal` completes, or until a new process took over (an in-place upgrade),
/// then drains. The steps are numbered as they happen.
pub async fn run_with(
    mut config: Config,
    start: Start,
    signal: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(&Bound),
) -> ExitCode {
    // 1. The admin token: the environment wins over the file. Set but empty is a mistake (a
    //    secret that did not expand), never "no authentication".
    if let Ok(token) = std::env::var("TURNOUT_ADMIN_TOKEN") {
        if token.trim().is_empty() {
            eprintln!("turnout: TURNOUT_ADMIN_TOKEN is set but empty: an empty token would mean no authentication; unset it to run without one, or give it a secret");
            return ExitCode::from(EX_USAGE);
        }
        config.server.admin_token = Some(token);
    }

    // 1b. Taking over from a running turnout: its sockets, and from here on it changes no
    //     routing, so the state file read next is the last it wrote. A failure from here until
    //     serving is told to it (`Takeover`'s drop), and it serves on.
    let mut takeover = match &start.takeover {
        None => None,
        Some(socket) => match crate::upgrade::Takeover::connect(socket).await {
            Ok(t) => {
                turnout_core::process::set_generation(t.generation);
                Some(t)
            }
            Err(e) => return fail(1, &e),
        },
    };

    // 1c. The hand-over socket, bound before the state file is touched: a second turnout
    //     started with the same state file (and so the same socket) stops here. Its directory
    //     and the state file's must exist and be writable, said by name.
    if let Some(problem) = state_dir_problem(&config) {
        return fail(EX_CANTCREAT, &problem);
    }
    let mut upgrades = None;
    if let (Some(socket), Some(config_path)) = (&config.server.upgrade_socket, &start.config_path) {
        let listener = match takeover.as_mut() {
            Some(t) => t.unix.take(),
            None => match crate::upgrade::bind_socket(socket) {
                Ok(l) => Some(l),
                Err((code, e)) => return fail(code, &e),
            },
        };
        upgrades = listener.map(|l| (socket, config_path, l));
    }

    // 2. The routing state: the state file wins over [routing] active.
    let state = config.state.file.as_ref().map(StateFile::new);
    let saved = match state.as_ref().map(StateFile::load).transpose() {
        Ok(saved) => saved.flatten(),
        Err(e) => return fail(EX_DATAERR, &e),
    };
    let restored = saved.is_some();
    let snapshot = match RoutingSnapshot::bootstrap(&config, saved) {
        Ok(s) => s,
        Err(e) => return fail(EX_DATAERR, &e),
    };
    // Write it now: a state directory that is not writable fails here, not at the first switch.
    if let Some(state) = &state {
        if let Err(e) = state.write(&StateFile::render(&snapshot.saved(), snapshot.changed_at)) {
            return fail(EX_CANTCREAT, &e);
        }
    }
    tracing::info!(
        workers = config.server.workers,
        active = %snapshot.active.name(),
        generation = snapshot.generation,
        source = if restored { "state file" } else { "config" },
        "routing state loaded"
    );
    let router = Router::new(snapshot);
    if let Some(t) = &takeover {
        t.mark_down(&router);
    }
    // The CA files of `[pools.NAME.tls]` and the system's roots, for `https://` upstreams.
    let mut settings = match ProxySettings::from_config(&config) {
        Ok(s) => s,
        Err(e) => return fail(EX_DATAERR, &e),
    };

    // 3. The HTTPS listener's certificates: each must load, or turnout does not start.
    let certs = match &config.tls {
        None => None,
        Some(tls) => match CertStore::load(&tls.certs, tls.reject_expired) {
            Ok(store) => Some(store),
            Err(e) => return fail(EX_DATAERR, &e),
        },
    };

    // 4. Bind every port before serving any, so a port in use fails the start cleanly; or take
    //    the sockets systemd holds for turnout (socket activation), matched by address.
    let mut inherited = match takeover.as_mut() {
        Some(t) => Inherited {
            sockets: std::mem::take(&mut t.listeners)
                .into_iter()
                .map(|(key, addr, listener)| (addr, Some(key), listener))
                .collect(),
            from: "the turnout taken over from",
        },
        None => match Inherited::from_env() {
            Ok(i) => i,
            Err(e) => return fail(1, &e),
        },
    };
    let (proxy_listener, admin_listener) = match (
        inherited
            .bind(config.server.listen, "[server] listen")
            .await,
        inherited.bind(config.server.admin, "[server] admin").await,
    ) {
        (Ok(p), Ok(a)) => (p, a),
        (Err(e), _) | (_, Err(e)) => return fail(1, &e),
    };
    let tls_listener = match (&config.tls, &certs) {
        (Some(tls), Some(store)) => {
            let listener = match inherited.bind(tls.listen, "[tls] listen").await {
                Ok(l) => l,
                Err(e) => return fail(1, &e),
            };
            let server_config = match store.server_config() {
                Ok(c) => c,
                Err(e) => return fail(EX_DATAERR, &e),
            };
            Some(TlsListener {
                listener,
                config: server_config,
                handshake_timeout: tls.handshake_timeout,
                max_handshakes: tls.max_handshakes,
            })
        }
        _ => None,
    };
    inherited.warn_unused();
    if config.server.admin_token.is_none() && !config.server.admin.ip().is_loopback() {
        tracing::warn!(
            admin = %config.server.admin,
            "the admin API listens beyond loopback without a token: anyone who reaches it can switch pools; set [server] admin_token or TURNOUT_ADMIN_TOKEN"
        );
    }
    let bound = Bound {
        proxy: proxy_listener
            .local_addr()
            .expect("a bound socket has an address"),
        admin: admin_listener
            .local_addr()
            .expect("a bound socket has an address"),
        tls: tls_listener.as_ref().map(|t| {
            t.listener
                .local_addr()
                .expect("a bound socket has an address")
        }),
    };
    if settings.redirect_https_port.is_some() {
        // The port bound, which differs from the configured one only for port 0.
        settings.redirect_https_port = bound.tls.map(|a| a.port());
    }
    for cert in certs.iter().flat_map(|s| s.infos()) {
        if cert.days_left < 14 {
            tracing::warn!(cert = %cert.cert, names = ?cert.names, not_after = %cert.not_after, days_left = cert.days_left, "certificate expires soon");
        }
    }

    // 5. The data plane (serving from step 7), and the admin API until it has drained. The
    //    admin API's `Control` is given the cache and the certificates here; switches and
    //    rollbacks are health-gated by a fresh probe of the target pool.
    let prober: Arc<dyn Probe> = Arc::new(HttpProber::new(&settings.upstream_tls));
    let checks_tls = settings.upstream_tls.clone();
    let plane = DataPlane::new(router.clone(), settings);
    let control = Control::with(
        router.clone(),
        state,
        Handles {
            prober: Some(prober),
            cache: Some(plane.cache()),
            tls: certs
                .as_ref()
                .map(|s| Arc::clone(s) as Arc<dyn turnout_core::TlsAdmin>),
            rollout: config.rollout.clone(),
        },
    );
    // A rollout that was under way when turnout last stopped: back to its baseline, never left
    // split.
    if let Err(e) = control.recover_rollout().await {
        tracing::error!(error = %e, "a rollout was under way when turnout stopped, and going back to its baseline failed; check the routing with turnout status");
    }

    // 5b. The hand-over socket a later upgrade's new process connects to (with a state file).
    let handover = match upgrades {
        Some((socket, config_path, unix)) => {
            let mut listeners = vec![
                ("[server] listen", &proxy_listener),
                ("[server] admin", &admin_listener),
            ];
            if let Some(t) = &tls_listener {
                listeners.push(("[tls] listen", &t.listener));
            }
            match crate::upgrade::Handover::start(
                control.clone(),
                config_path,
                crate::upgrade::Binaries {
                    allowed: config.server.upgrade_binaries.clone(),
                    token: config.server.admin_token.is_some(),
                },
                socket,
                unix,
                &listeners,
            ) {
                Ok((handover, unix)) => {
                    tokio::spawn(Arc::clone(&handover).accept(unix));
                    Some(handover)
                }
                Err(e) => return fail(1, &e),
            }
        }
        None => None,
    };
    let handed = handover
        .as_ref()
        .map_or_else(CancellationToken::new, |h| h.handed());

    // 6. Active health checks of every pool's servers, following the routing state; and the
    //    certificates' reloads (SIGHUP, and the file watch when asked for).
    let checks = turnout_proxy::spawn_health_checks(router.clone(), &checks_tls);
    let sampler = router.spawn_stats_sampler();
    let mut tls_tasks = vec![spawn_reload_on_sighup(certs.clone())];
    if let Some(store) = &certs {
        if config.tls.as_ref().is_some_and(|t| t.watch) {
            tls_tasks.push(turnout_proxy::tls::spawn_watch(
                Arc::clone(store),
                turnout_config::defaults::TLS_WATCH_INTERVAL,
            ));
        }
    }

    // 7. The data plane, until a signal; then the health path turns 503, the listener stays
    //    open for the shutdown delay, closes, and what is in flight finishes.
    let delay = config.server.shutdown_delay;
    let shutdown = {
        let plane = plane.clone();
        let handed = handed.clone();
        let handover = handover.clone();
        async move {
            tokio::select! {
                () = signal => {
                    if let Some(h) = &handover {
                        h.release();
                    }
                }
                // Handed over: the new process serves the health path and accepts from the same
                // sockets, so no delay and no 503; the accept loops end now.
                () = handed.cancelled() => {
                    plane.handed_over();
                    return;
                }
            }
            crate::upgrade::notify_stopping();
            plane.start_draining();
            tracing::info!(
                ?delay,
                "shutting down: the health path answers 503; the listener closes after the delay"
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown_signal() => tracing::info!("second signal: closing the listener now"),
            }
        }
    };
    // 7b. Taking over: say ready, and serve only once the previous process confirms (it stops
    //     accepting and taking admin calls then). Only now the admin API starts, so a change
    //     made here is never lost to a hand-over that did not happen.
    if let Some(t) = takeover.as_mut() {
        if let Err(e) = t.commit().await {
            return fail(1, &e);
        }
        tracing::info!(
            from_pid = t.from_pid,
            generation = t.generation,
            "took over the sockets and the state file"
        );
        router.snapshot().env.events.push(
            "upgrade",
            format!(
                "turnout {} (pid {}, process generation {}) took over from pid {}",
                env!("CARGO_PKG_VERSION"),
                std::process::id(),
                t.generation,
                t.from_pid
            ),
        );
    }
    drop(takeover);
    let admin_stop = CancellationToken::new();
    let admin_task = {
        let stop = admin_stop.clone();
        let handed = handed.clone();
        tokio::spawn(turnout_admin::serve(
            admin_listener,
            control.clone(),
            turnout_admin::AdminPolicy {
                token: config.server.admin_token.clone(),
                hosts: config.server.admin_hosts.clone(),
                origins: config.server.admin_origins.clone(),
            },
            handover.as_ref().map(|h| {
                Arc::new(crate::upgrade::UpgradeHandle(Arc::clone(h)))
                    as Arc<dyn turnout_admin::Upgrader>
            }),
            async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = handed.cancelled() => {}
                }
            },
        ))
    };
    let usr2 = spawn_upgrade_on_sigusr2(handover.clone());
    turnout_core::process::set_instance(turnout_core::process::Instance {
        name: config.server.name.clone().unwrap_or_else(|| {
            rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned()
        }),
        listen: bound.proxy.to_string(),
        admin: bound.admin.to_string(),
    });
    tracing::info!(proxy = %bound.proxy, admin = %bound.admin, https = bound.tls.map(tracing::field::display), health = %config.server.health_path, version = env!("CARGO_PKG_VERSION"), pid = std::process::id(), generation = turnout_core::process::generation(), "turnout is serving");
    crate::upgrade::notify_ready();
    on_ready(&bound);
    let drained = plane.serve(proxy_listener, tls_listener, shutdown).await;

    // 8. Done: stop the checks and the admin API, and report.
    checks.abort();
    sampler.abort();
    usr2.abort();
    for task in tls_tasks {
        task.abort();
    }
    admin_stop.cancel();
    if let Ok(Err(e)) = admin_task.await {
        tracing::warn!(error = %e, "admin API ended with an error");
    }
    match handover.as_ref().and_then(|h| h.successor()) {
        Some(pid) => tracing::info!(successor = pid, "handed over to the new process"),
        None => {
            if let Some(h) = &handover {
                // This process's own socket; a later start binds a fresh one.
                let _ = std::fs::remove_file(h.socket());
            }
        }
    }
    if drained.complete {
        tracing::info!("drained; exiting");
    } else {
        tracing::warn!(
            connections = drained.connections_left,
            tunnels = drained.tunnels_left,
            "shutdown timeout reached; closing what is left"
        );
    }
    ExitCode::SUCCESS
}

/// Listening sockets handed to turnout at start (systemd socket activation: `LISTEN_FDS`, read
/// by the listenfd crate; or the turnout it takes over from), each used for the listener
/// configured at its address. A listener configured at port 0 ("any") takes the socket of the
/// same key (`[server] listen`...) at the same IP: after an upgrade, the port it had.
struct Inherited {
    /// Address, the key it served (sockets from a turnout), socket.
    sockets: Vec<(SocketAddr, Option<String>, std::net::TcpListener)>,
    /// Where they came from, for the log.
    from: &'static str,
}

impl Inherited {
    fn from_env() -> Result<Inherited, String> {
        let mut fds = listenfd::ListenFd::from_env();
        let mut sockets = Vec::new();
        for i in 0..fds.len() {
            let listener = fds.take_tcp_listener(i).map_err(|e| {
                format!(
                    "LISTEN_FDS: socket {} is no TCP listener turnout can use: {e}",
                    i + 3
                )
            })?;
            if let Some(listener) = listener {
                let addr = listener
                    .local_addr()
                    .map_err(|e| format!("LISTEN_FDS: socket {}: {e}", i + 3))?;
                sockets.push((addr, None, listener));
            }
        }
        Ok(Inherited {
            sockets,
            from: "LISTEN_FDS",
        })
    }

    /// The inherited socket at `addr`, or a new one bound there.
    async fn bind(&mut self, addr: SocketAddr, key: &str) -> Result<TcpListener, String> {
        let from = self.from;
        let same_key = |a: &SocketAddr, k: &Option<String>| {
            addr.port() == 0 && a.ip() == addr.ip() && k.as_deref() == Some(key)
        };
        let at = (self.sockets.iter().position(|(a, _, _)| *a == addr))
            .or_else(|| self.sockets.iter().position(|(a, k, _)| same_key(a, k)));
        if let Some(at) = at {
            let (addr, _, listener) = self.sockets.swap_remove(at);
            listener
                .set_nonblocking(true)
                .map_err(|e| format!("the socket for {addr} ({key}) from {from}: {e}"))?;
            tracing::info!(%addr, key, from, "listening on a socket handed over at start");
            return TcpListener::from_std(listener)
                .map_err(|e| format!("the socket for {addr} ({key}) from {from}: {e}"));
        }
        TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} ({key}): {e}"))
    }

    /// Sockets handed over that no listener is configured at: said, and closed.
    fn warn_unused(self) {
        for (addr, _, _) in self.sockets {
            tracing::warn!(%addr, from = self.from, "a socket handed over matches no configured listener ([server] listen, admin, [tls] listen); closed");
        }
    }
}

/// SIGHUP reloads the certificates, as `POST /v1/tls/reload` does; a failure is logged and
/// the previous certificates stay. Without `[tls]` it is logged and ignored: operators and
/// their tools (logrotate's postrotate, config management) send HUP by habit, and its default
/// action would end the process and every connection with it. The handler is installed
/// before this returns, so no HUP from then on falls to the default action.
fn spawn_reload_on_sighup(store: Option<Arc<CertStore>>) -> tokio::task::JoinHandle<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let hup = signal(SignalKind::hangup());
    tokio::spawn(async move {
        let Ok(mut hup) = hup else {
            tracing::warn!("cannot listen for SIGHUP; reload certificates over the admin API");
            return;
        };
        while hup.recv().await.is_some() {
            let Some(store) = store.clone() else {
                tracing::info!(
                    "SIGHUP: nothing to reload (no [tls] certificates); turnout serves on"
                );
                continue;
            };
            match tokio::task::spawn_blocking(move || store.reload()).await {
                Ok(Ok(certs)) => {
                    tracing::info!(certs = certs.len(), "SIGHUP: certificates reloaded")
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "SIGHUP: certificates not reloaded; the previous ones are still served")
                }
                Err(e) => tracing::error!(error = %e, "SIGHUP: the reload did not finish"),
            }
        }
    })
}

/// SIGUSR2 starts an in-place upgrade with the binary this process was started from, as
/// `turnout upgrade` does; the outcome is logged.
fn spawn_upgrade_on_sigusr2(
    handover: Option<Arc<crate::upgrade::Handover>>,
) -> tokio::task::JoinHandle<()> {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let Ok(mut usr2) = signal(SignalKind::user_defined2()) else {
            tracing::warn!("cannot listen for SIGUSR2; upgrade with turnout upgrade");
            return;
        };
        while usr2.recv().await.is_some() {
            let Some(handover) = &handover else {
                tracing::error!("SIGUSR2: no in-place upgrade here: it needs [state] file");
                continue;
            };
            match Arc::clone(handover).upgrade(None).await {
                Ok(r) => {
                    tracing::info!(pid = r.pid, version = %r.version, generation = r.generation, "SIGUSR2: upgraded")
                }
                Err(e) => tracing::error!(error = %e, "SIGUSR2: not upgraded"),
            }
        }
    })
}

/// SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Logs to stderr through a background writer ([`crate::logbuf`]), so a slow terminal or pipe
/// never stalls a request. Filter with RUST_LOG (default `info`;
/// `RUST_LOG=info,turnout::access=off` drops the access log). The guard writes the last lines.
pub fn init_logging() -> crate::logbuf::FlushGuard {
    let (writer, guard) = crate::logbuf::batched();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    guard
}
