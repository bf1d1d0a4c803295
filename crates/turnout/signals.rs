//! The signals a serving turnout answers besides SIGTERM and SIGINT (the shutdown): SIGHUP
//! reloads (the config file, by an in-place upgrade to the same binary), SIGUSR2 upgrades in
//! place.

use std::sync::Arc;

use turnout_proxy::CertStore;

/// SIGHUP reloads, as `turnout reload` does: the config file is checked, then read by a new
/// process of the same binary that takes over in place (`Handover::reload`); a file that fails
/// its check is logged with why, and nothing changes. Without `[state] file` there is no
/// in-place upgrade: SIGHUP then reloads the certificates only (as `POST /v1/tls/reload`), and
/// says that the config's other edits need a restart. Never the default action, which would
/// end the process and every connection with it: the handler is installed before this returns.
pub fn spawn_reload_on_sighup(
    handover: Option<Arc<crate::upgrade::Handover>>,
    store: Option<Arc<CertStore>>,
) -> tokio::task::JoinHandle<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let hup = signal(SignalKind::hangup());
    tokio::spawn(async move {
        let Ok(mut hup) = hup else {
            tracing::warn!("cannot listen for SIGHUP; reload with turnout reload");
            return;
        };
        while hup.recv().await.is_some() {
            if let Some(handover) = &handover {
                tracing::info!("SIGHUP: reloading the config file");
                // On success the hand-over's own line (`upgrade: handed over ... pid=NEW`) is
                // the one to read: with nothing in flight this process exits at once, and the
                // line after the await may never be written.
                match Arc::clone(handover).reload().await {
                    Ok(r) => {
                        tracing::info!(pid = r.pid, version = %r.version, generation = r.generation, took_ms = r.took_ms, "SIGHUP: reloaded; the new process serves")
                    }
                    Err(e) => tracing::error!(error = %e, "SIGHUP: not reloaded"),
                }
                continue;
            }
            tracing::warn!("SIGHUP: the config file is not reloaded without [state] file (a reload is an in-place upgrade); restart to apply its edits");
            let Some(store) = store.clone() else {
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
pub fn spawn_upgrade_on_sigusr2(
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
