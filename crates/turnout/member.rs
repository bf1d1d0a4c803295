//! Starting this instance's fleet member (`[fleet]`): connect to etcd, start the member task
//! (turnout-fleet's `Member`) beside the data plane, and wait for its first join, at most
//! `[fleet] join_timeout`, before serving: an instance started mid-deploy answers its first
//! request on the fleet's routing.

use std::net::SocketAddr;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use turnout_config::Config;
use turnout_core::Control;
use turnout_fleet::member::{Identity, Member};
use turnout_fleet::EtcdStore;

use crate::exit::StartError;

/// The running member: its task, and the switch that makes it leave the roster.
#[derive(Debug)]
pub struct Running {
    task: JoinHandle<()>,
    stop: Option<oneshot::Sender<()>>,
}

impl Running {
    /// Leaves the fleet's roster (its lease revoked), waiting at most a second for it.
    pub async fn leave(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), &mut self.task).await;
    }
}

impl Drop for Running {
    /// A hand-over to a new process: the new one joins under its own lease (its report takes
    /// the same key over); this one stops following.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// With `[fleet]`: starts the member and waits for its first join (at most `join_timeout`;
/// past it turnout serves with its health path failing until the member joins). Without:
/// nothing.
pub async fn start(
    config: &Config,
    control: &Control,
    admin: SocketAddr,
) -> Result<Option<Running>, StartError> {
    let Some(fleet) = &config.fleet else {
        return Ok(None);
    };
    let options = crate::fleet::store::etcd_options(fleet, std::time::Duration::from_secs(3))
        .map_err(StartError::Data)?;
    let identity = Identity {
        instance: fleet
            .instance
            .clone()
            .unwrap_or_else(turnout_fleet::member::host_name),
        admin: Some(
            fleet
                .admin_url
                .clone()
                .unwrap_or_else(|| format!("http://{admin}")),
        ),
        lease_ttl: fleet.lease_ttl,
    };
    let (joined_tx, joined_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    // Held from here, before anything serves: the member releases it once joined.
    control
        .router()
        .fleet()
        .set_member(&fleet.name, &identity.instance);
    control.router().fleet().hold_with(format!(
        "joining fleet {}: not serving the fleet's routing yet",
        fleet.name
    ));
    let name = fleet.name.clone();
    let control = control.clone();
    let task = tokio::spawn(async move {
        // The client connects lazily, but checks credentials at once: a store that is down
        // must not stop turnout from starting, so this is retried until it answers.
        let store = loop {
            match EtcdStore::connect(&name, &options).await {
                Ok(store) => break store,
                Err(e) => {
                    tracing::warn!(fleet = %name, error = %e, "cannot reach the fleet's store; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        };
        Member::new(store, control, identity)
            .run(joined_tx, async {
                let _ = stop_rx.await;
            })
            .await;
    });
    if tokio::time::timeout(fleet.join_timeout, joined_rx)
        .await
        .is_err()
    {
        tracing::warn!(fleet = %fleet.name, timeout = ?fleet.join_timeout, "not joined to the fleet yet: serving, with the health path failing until it joins");
    }
    Ok(Some(Running {
        task,
        stop: Some(stop_tx),
    }))
}
