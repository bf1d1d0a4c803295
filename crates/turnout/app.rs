//! Serving, as steps that return values: [`load`] the routing state, [`read_files`] (the CAs
//! and certificates), bind the [`Listeners`], [`Turnout::build`] the data plane and the admin
//! API's `Control`, and `Turnout::serve` until a shutdown, then drain. [`run`] is those steps
//! for a caller that brings its own listeners and shutdown (tests, the demo). [`serve`] is
//! `turnout serve`: the same steps plus what only a process has (the environment's token,
//! sockets from systemd or from the turnout it takes over from, the upgrade socket, signals,
//! systemd's readiness). [`check`] runs the reading steps and stops.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use turnout_config::Config;
use turnout_core::control::Probe;
use turnout_core::{Control, Handles, Router, RoutingSnapshot, StateFile};
use turnout_proxy::{CertStore, DataPlane, Drained, HttpProber, ProxySettings, TlsListener};

use crate::exit::StartError;
use crate::inherit::Inherited;
use crate::upgrade::{Handover, Takeover};

/// `turnout serve --config FILE [--takeover SOCKET]`. Exit codes: 0 after a clean shutdown or
/// a hand-over, and [`StartError::code`]'s when it cannot start.
pub fn serve(path: &Path, takeover: Option<&Path>) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            if let Some(socket) = takeover {
                crate::upgrade::report_failure_to(socket, &e.to_string());
            }
            return StartError::Config(e.to_string()).exit();
        }
    };
    let _log = crate::logbuf::init(config.log.format);
    let start = Start {
        config_path: Some(path.to_path_buf()),
        takeover: takeover.map(Path::to_path_buf),
    };
    let runtime = runtime(&config);
    match runtime.block_on(serve_process(
        config,
        start,
        crate::signals::shutdown_signal(),
    )) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => e.exit(),
    }
}

/// The tokio runtime for `config`'s `[server] workers`.
pub fn runtime(config: &Config) -> tokio::runtime::Runtime {
    // One worker: a current-thread runtime, with no work-stealing machinery at all (the
    // equivalent of nginx's `worker_processes 1`). More: tokio's multi-thread scheduler.
    let mut builder = if config.server.workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(config.server.workers);
        b
    };
    builder
        .enable_all()
        .thread_name("turnout")
        .build()
        .expect("the tokio runtime starts")
}

/// How this process came to serve.
#[derive(Debug, Default)]
struct Start {
    /// The config file, for a new process started by an upgrade; without it, no upgrades.
    config_path: Option<PathBuf>,
    /// `--takeover SOCKET`: take the listening sockets over from the turnout there.
    takeover: Option<PathBuf>,
}

/// `turnout check --config FILE`: every step `serve` takes before it binds a port.
pub fn check(path: &Path) -> ExitCode {
    match check_steps(path) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => e.exit(),
    }
}

fn check_steps(path: &Path) -> Result<String, StartError> {
    let config = Config::load(path).map_err(|e| StartError::Config(e.to_string()))?;
    state_dirs(&config)?;
    let loaded = load(&config)?;
    let files = read_files(&config)?;
    // [fleet]: the etcd TLS files and the credentials in the environment, as a start reads them.
    let fleet = match &config.fleet {
        Some(f) => {
            crate::fleet::store::etcd_options(f, std::time::Duration::from_secs(3))
                .map_err(StartError::Data)?;
            format!(
                "\n  fleet {} as {} (etcd: {}); once joined, the fleet's desired routing decides what is active",
                f.name,
                f.instance.clone().unwrap_or_else(turnout_fleet::member::host_name),
                f.etcd.join(", ")
            )
        }
        None => String::new(),
    };
    let mut certs = String::new();
    for c in files.certs.iter().flat_map(|s| s.infos()) {
        certs.push_str(&format!(
            "\n  certificate {}: {} (expires {}, {} days left)",
            c.cert,
            c.names.join(", "),
            c.not_after,
            c.days_left
        ));
    }
    Ok(format!(
        "{}: ok. {} pool(s); {} would be active{}.{certs}{fleet}",
        path.display(),
        loaded.snapshot.pools.len(),
        loaded.snapshot.active.name(),
        if loaded.restored {
            " (from the state file)"
        } else {
            ""
        }
    ))
}

/// The directories turnout writes into (the state file's, the upgrade socket's) must exist and
/// be writable by this process; the error names the directory and the key. `check` and `serve`
/// both ask, so `check` never says ok to a config that `serve` then refuses.
fn state_dirs(config: &Config) -> Result<(), StartError> {
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
        return Err(StartError::CantCreate(format!(
            "the directory {} of {key} ({}) {problem}: create it, owned by the user turnout runs as (under systemd: StateDirectory=turnout makes /var/lib/turnout)",
            dir.display(),
            file.display()
        )));
    }
    Ok(())
}

/// The routing state to start from: the state file's, which wins over `[routing] active`.
#[derive(Debug)]
pub struct Loaded {
    state: Option<StateFile>,
    snapshot: RoutingSnapshot,
    /// Whether it came from the state file.
    restored: bool,
}

/// Step: the routing state, read (nothing is written).
pub fn load(config: &Config) -> Result<Loaded, StartError> {
    let state = config.state.file.as_ref().map(StateFile::new);
    let saved = state
        .as_ref()
        .map(StateFile::load)
        .transpose()
        .map_err(|e| StartError::Data(e.to_string()))?
        .flatten();
    let restored = saved.is_some();
    let snapshot =
        RoutingSnapshot::bootstrap(config, saved).map_err(|e| StartError::Data(e.to_string()))?;
    Ok(Loaded {
        state,
        snapshot,
        restored,
    })
}

impl Loaded {
    /// Writes the state file now: a state directory that is not writable fails the start, not
    /// the first switch.
    fn persist(&self) -> Result<(), StartError> {
        if let Some(state) = &self.state {
            let text = StateFile::render(&self.snapshot.saved(), self.snapshot.changed_at);
            state
                .write(&text)
                .map_err(|e| StartError::CantCreate(e.to_string()))?;
        }
        Ok(())
    }
}

/// What the data plane and the HTTPS listener read from files.
#[derive(Debug)]
pub struct Files {
    /// The data plane's settings, with the CAs of `[pools.NAME.tls]` and the system's roots.
    settings: ProxySettings,
    /// The HTTPS listener's certificates (with `[tls]`): each must load.
    certs: Option<Arc<CertStore>>,
}

/// Step: the files the config names beyond the state file.
pub fn read_files(config: &Config) -> Result<Files, StartError> {
    let settings =
        ProxySettings::from_config(config).map_err(|e| StartError::Data(e.to_string()))?;
    let certs = config
        .tls
        .as_ref()
        .map(|tls| CertStore::load(&tls.certs, tls.reject_expired))
        .transpose()
        .map_err(|e| StartError::Data(e.to_string()))?;
    Ok(Files { settings, certs })
}

/// The listening sockets: the proxy's port (the load balancer's), the admin API's, and the
/// HTTPS port with `[tls]`.
#[derive(Debug)]
pub struct Listeners {
    /// `[server] listen`: the load balancer's port.
    pub proxy: TcpListener,
    /// `[server] admin`.
    pub admin: TcpListener,
    /// `[tls] listen`, with `[tls]`.
    pub tls: Option<TcpListener>,
}

/// The addresses turnout listens on.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// The proxy's.
    pub proxy: SocketAddr,
    /// The admin API's.
    pub admin: SocketAddr,
    /// The HTTPS listener, with `[tls]`.
    pub tls: Option<SocketAddr>,
}

impl Listeners {
    /// Step: binds the addresses `config` names (every port before serving any, so a port in
    /// use fails the start cleanly).
    pub async fn bind(config: &Config) -> Result<Listeners, StartError> {
        Listeners::take(config, &mut Inherited::none()).await
    }

    /// As [`Listeners::bind`], but taking the sockets `inherited` holds where they match.
    async fn take(config: &Config, inherited: &mut Inherited) -> Result<Listeners, StartError> {
        let proxy = inherited
            .bind(config.server.listen, "[server] listen")
            .await;
        let admin = inherited.bind(config.server.admin, "[server] admin").await;
        let tls = match &config.tls {
            Some(tls) => Some(inherited.bind(tls.listen, "[tls] listen").await),
            None => None,
        };
        Ok(Listeners {
            proxy: proxy.map_err(StartError::Other)?,
            admin: admin.map_err(StartError::Other)?,
            tls: tls.transpose().map_err(StartError::Other)?,
        })
    }

    /// The addresses bound (the port chosen, for port 0).
    pub fn bound(&self) -> Bound {
        let addr = |l: &TcpListener| l.local_addr().expect("a bound socket has an address");
        Bound {
            proxy: addr(&self.proxy),
            admin: addr(&self.admin),
            tls: self.tls.as_ref().map(addr),
        }
    }
}

/// Serves `config` on `listeners` until `shutdown` completes, then drains: the steps without
/// a process's own parts (no signals, no upgrades, no systemd). For tests and the demo.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Drained, StartError> {
    let loaded = load(&config)?;
    loaded.persist()?;
    let files = read_files(&config)?;
    let turnout = Turnout::build(config, loaded, files, listeners.bound())?;
    turnout.recover().await;
    let member =
        crate::member::start(&turnout.config, &turnout.control, listeners.bound().admin).await?;
    let process = Process {
        member,
        ..Process::default()
    };
    turnout.serve(listeners, process, shutdown).await
}

/// What only a process serving for real brings to [`Turnout::serve`].
#[derive(Debug, Default)]
struct Process {
    /// The upgrade socket's side, with `[server] upgrade_socket` and a config file.
    handover: Option<Arc<Handover>>,
    /// The turnout this process takes over from, to be told once this one is ready.
    takeover: Option<Takeover>,
    /// SIGHUP and SIGUSR2 answered, a second SIGTERM cuts the shutdown delay short, systemd
    /// told of readiness, the instance's name and addresses set for the status.
    signals: bool,
    /// The fleet member, with `[fleet]`: it leaves the fleet's roster when draining starts.
    member: Option<crate::member::Running>,
}

/// `turnout serve`: the steps, with sockets from systemd or the turnout taken over from, the
/// upgrade socket, and signals. A failure from the moment a takeover connected is told to the
/// turnout it was to take over from, which serves on.
async fn serve_process(
    mut config: Config,
    start: Start,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<Drained, StartError> {
    // The admin token: the environment wins over the file. Set but empty is a mistake (a
    // secret that did not expand), never "no authentication".
    if let Ok(token) = std::env::var("TURNOUT_ADMIN_TOKEN") {
        if token.trim().is_empty() {
            return Err(StartError::Config("TURNOUT_ADMIN_TOKEN is set but empty: an empty token would mean no authentication; unset it to run without one, or give it a secret".into()));
        }
        config.server.admin_token = Some(token);
    }
    // Taking over from a running turnout: its sockets, and from here on it changes no routing,
    // so the state file read next is the last it wrote.
    let mut takeover = match &start.takeover {
        None => None,
        Some(socket) => {
            let t = Takeover::connect(socket).await.map_err(StartError::Other)?;
            turnout_core::process::set_generation(t.generation);
            Some(t)
        }
    };
    let result = serve_steps(config, start, &mut takeover, signal).await;
    if let (Err(e), Some(_)) = (&result, &takeover) {
        // Kept before `takeover` drops, which tells the running turnout why.
        crate::exit::remember(e);
    }
    result
}

async fn serve_steps(
    config: Config,
    start: Start,
    takeover: &mut Option<Takeover>,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<Drained, StartError> {
    // The hand-over socket, bound before the state file is touched: a second turnout started
    // with the same state file (and so the same socket) stops here.
    state_dirs(&config)?;
    let mut upgrades = None;
    if let (Some(socket), Some(config_path)) = (&config.server.upgrade_socket, &start.config_path) {
        let listener = match takeover.as_mut() {
            Some(t) => t.unix.take(),
            None => Some(
                crate::upgrade::bind_socket(socket).map_err(|(code, e)| match code {
                    crate::exit::EX_CANTCREAT => StartError::CantCreate(e),
                    _ => StartError::Other(e),
                })?,
            ),
        };
        upgrades = listener.map(|l| (socket.clone(), config_path.clone(), l));
    }

    let loaded = load(&config)?;
    loaded.persist()?;
    let files = read_files(&config)?;

    // Sockets from the turnout taken over from, or from systemd (socket activation), matched
    // by address; the rest bound here.
    let mut inherited = match takeover.as_mut() {
        Some(t) => Inherited::from_takeover(std::mem::take(&mut t.listeners)),
        None => Inherited::from_env().map_err(StartError::Other)?,
    };
    let listeners = Listeners::take(&config, &mut inherited).await?;
    inherited.warn_unused();

    let turnout = Turnout::build(config, loaded, files, listeners.bound())?;
    if let Some(t) = takeover.as_ref() {
        t.mark_down(&turnout.router);
    }
    turnout.recover().await;

    // The hand-over socket a later upgrade's new process connects to (with a state file).
    let handover = match upgrades {
        Some((socket, config_path, unix)) => {
            let mut sockets = vec![
                ("[server] listen", &listeners.proxy),
                ("[server] admin", &listeners.admin),
            ];
            if let Some(t) = &listeners.tls {
                sockets.push(("[tls] listen", t));
            }
            let binaries = crate::upgrade::Binaries {
                allowed: turnout.config.server.upgrade_binaries.clone(),
                token: turnout.config.server.admin_token.is_some(),
            };
            let (handover, unix) = Handover::start(
                turnout.control.clone(),
                &config_path,
                binaries,
                &socket,
                unix,
                &sockets,
            )
            .map_err(StartError::Other)?;
            tokio::spawn(Arc::clone(&handover).accept(unix));
            Some(handover)
        }
        None => None,
    };
    let member =
        crate::member::start(&turnout.config, &turnout.control, listeners.bound().admin).await?;
    let process = Process {
        handover,
        takeover: takeover.take(),
        signals: true,
        member,
    };
    turnout.serve(listeners, process, signal).await
}

/// Everything built, before serving: the routing, the data plane, and the admin API's handle.
#[derive(Debug)]
pub struct Turnout {
    config: Config,
    router: Router,
    plane: DataPlane,
    control: Control,
    certs: Option<Arc<CertStore>>,
    /// The HTTPS listener's rustls settings, with `[tls]`.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// What the health checks trust for `https://` servers.
    checks_tls: turnout_proxy::UpstreamTls,
}

impl Turnout {
    /// Step: the router over `loaded`'s routing state, the data plane, and `Control` with the
    /// cache and certificates it administers; switches and rollbacks are health-gated by a
    /// fresh probe of the target pool.
    pub fn build(
        config: Config,
        loaded: Loaded,
        files: Files,
        bound: Bound,
    ) -> Result<Turnout, StartError> {
        let Files {
            mut settings,
            certs,
        } = files;
        tracing::info!(
            workers = config.server.workers,
            active = %loaded.snapshot.active.name(),
            generation = loaded.snapshot.generation,
            source = if loaded.restored { "state file" } else { "config" },
            "routing state loaded"
        );
        let tls = certs
            .as_ref()
            .map(|store| store.server_config())
            .transpose()
            .map_err(|e| StartError::Data(e.to_string()))?;
        if settings.redirect_https_port.is_some() {
            // The port bound, which differs from the configured one only for port 0.
            settings.redirect_https_port = bound.tls.map(|a| a.port());
        }
        for cert in certs.iter().flat_map(|s| s.infos()) {
            if cert.days_left < 14 {
                tracing::warn!(cert = %cert.cert, names = ?cert.names, not_after = %cert.not_after, days_left = cert.days_left, "certificate expires soon");
            }
        }
        if config.server.admin_token.is_none() && !config.server.admin.ip().is_loopback() {
            tracing::warn!(
                admin = %config.server.admin,
                "the admin API listens beyond loopback without a token: anyone who reaches it can switch pools; set [server] admin_token or TURNOUT_ADMIN_TOKEN"
            );
        }
        let router = Router::new(loaded.snapshot);
        let prober: Arc<dyn Probe> = Arc::new(HttpProber::new(&settings.upstream_tls));
        let checks_tls = settings.upstream_tls.clone();
        let plane = DataPlane::new(router.clone(), settings);
        let control = Control::with(
            router.clone(),
            loaded.state,
            Handles {
                prober: Some(prober),
                cache: Some(plane.cache()),
                tls: certs
                    .as_ref()
                    .map(|s| Arc::clone(s) as Arc<dyn turnout_core::TlsAdmin>),
                rollout: config.rollout.clone(),
                step_check: Some(Arc::new(crate::check_cmd::ShellCheck)),
            },
        );
        Ok(Turnout {
            config,
            router,
            plane,
            control,
            certs,
            tls,
            checks_tls,
        })
    }

    /// The admin API's handle on this turnout.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// A rollout that was under way when turnout last stopped goes back to its baseline: never
    /// left split.
    pub async fn recover(&self) {
        if let Err(e) = self.control.rollouts().recover().await {
            tracing::error!(error = %e, "a rollout was under way when turnout stopped, and going back to its baseline failed; check the routing with turnout status");
        }
    }

    /// Step: the health checks, the admin API and the data plane, until `signal` (or until a
    /// new process took over, with an upgrade socket); then the health path turns 503, the
    /// listener stays open for the shutdown delay, closes, and what is in flight finishes.
    async fn serve(
        self,
        listeners: Listeners,
        mut process: Process,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Drained, StartError> {
        let Turnout {
            config,
            router,
            plane,
            control,
            certs,
            tls,
            checks_tls,
        } = self;
        let bound = listeners.bound();
        let Listeners {
            proxy,
            admin,
            tls: tls_socket,
        } = listeners;
        let tls_listener = match (tls_socket, tls, &config.tls) {
            (Some(listener), Some(server), Some(tls)) => Some(TlsListener {
                listener,
                config: server,
                handshake_timeout: tls.handshake_timeout,
                max_handshakes: tls.max_handshakes,
            }),
            _ => None,
        };
        let handover = process.handover.clone();
        let handed = handover
            .as_ref()
            .map_or_else(CancellationToken::new, |h| h.handed());
        if let Some(h) = &handover {
            let plane = plane.clone();
            h.before_handed(move || plane.handed_over());
        }

        // Active health checks of every pool's servers, following the routing state; and the
        // certificates' reloads (SIGHUP, and the file watch when asked for).
        let mut tasks = vec![
            turnout_proxy::spawn_health_checks(router.clone(), &checks_tls),
            router.spawn_stats_sampler(),
        ];
        if process.signals {
            tasks.push(crate::signals::spawn_reload_on_sighup(
                handover.clone(),
                certs.clone(),
            ));
            tasks.push(crate::signals::spawn_upgrade_on_sigusr2(handover.clone()));
        }
        if let Some(store) = &certs {
            if config.tls.as_ref().is_some_and(|t| t.watch) {
                tasks.push(turnout_proxy::tls::spawn_watch(
                    Arc::clone(store),
                    turnout_config::defaults::TLS_WATCH_INTERVAL,
                ));
            }
        }

        let delay = config.server.shutdown_delay;
        let shutdown = {
            let plane = plane.clone();
            let handed = handed.clone();
            let handover = handover.clone();
            let second_signal = process.signals;
            let member = process.member.take();
            async move {
                tokio::select! {
                    () = signal => {
                        if let Some(h) = &handover {
                            h.release();
                        }
                    }
                    // Handed over: the new process serves the health path and accepts from the
                    // same sockets, so no delay and no 503; the accept loops end now.
                    () = handed.cancelled() => {
                        plane.handed_over();
                        return;
                    }
                }
                crate::upgrade::notify_stopping();
                plane.start_draining();
                // Out of the fleet's roster first: no coordinator waits for this one any more.
                if let Some(m) = member {
                    m.leave().await;
                }
                tracing::info!(
                    ?delay,
                    "shutting down: the health path answers 503; the listener closes after the delay"
                );
                let second = async {
                    if second_signal {
                        crate::signals::shutdown_signal().await
                    } else {
                        std::future::pending().await
                    }
                };
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = second => tracing::info!("second signal: closing the listener now"),
                }
            }
        };
        // Taking over: say ready, and serve only once the previous process confirms (it stops
        // accepting and taking admin calls then). Only now the admin API starts, so a change
        // made here is never lost to a hand-over that did not happen.
        if let Some(t) = process.takeover.as_mut() {
            t.commit().await.map_err(StartError::Other)?;
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
        drop(process.takeover.take());
        let admin_stop = CancellationToken::new();
        let admin_task = {
            let stop = admin_stop.clone();
            let handed = handed.clone();
            tokio::spawn(turnout_admin::serve(
                admin,
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
        if process.signals {
            crate::upgrade::notify_ready();
        }
        let drained = plane.serve(proxy, tls_listener, shutdown).await;

        // Done: stop the checks and the admin API, and report.
        for task in tasks {
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
        Ok(drained)
    }
}
