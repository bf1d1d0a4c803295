//! The single writer of the routing state. Every change runs: take the writer lock, load the
//! current snapshot, build the next one, persist it, publish it (one pointer store), log it.
//! The data plane never takes this lock; it only loads the snapshot.

use std::sync::Arc;

use crate::snapshot::{Router, RoutingSnapshot};
use crate::state::StateFile;
use crate::{Command, CoreError, StateError};

#[derive(Debug, Clone)]
pub struct Control {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    router: Router,
    state: Option<StateFile>,
    /// An async mutex because it is held across the state file write (done on the blocking
    /// pool); it only orders writers, never readers.
    writer: tokio::sync::Mutex<()>,
}

impl Control {
    pub fn new(router: Router, state: Option<StateFile>) -> Control {
        Control {
            inner: Arc::new(Inner {
                router,
                state,
                writer: tokio::sync::Mutex::new(()),
            }),
        }
    }

    pub fn router(&self) -> &Router {
        &self.inner.router
    }

    pub fn state_file(&self) -> Option<&StateFile> {
        self.inner.state.as_ref()
    }

    /// Applies `command`. On success the new snapshot is live (or, for a command that changes
    /// nothing, the current one is returned). On error nothing changed.
    pub async fn apply(&self, command: Command) -> Result<Arc<RoutingSnapshot>, CoreError> {
        let _writer = self.inner.writer.lock().await;
        let current = self.inner.router.snapshot();
        let Some(next) = command.apply(&current)? else {
            tracing::info!(target: "turnout::admin", %command, generation = current.generation, "no change");
            return Ok(current);
        };
        if let Some(state) = &self.inner.state {
            let bytes = StateFile::render(&next);
            let state = state.clone();
            tokio::task::spawn_blocking(move || state.write(&bytes))
                .await
                .expect("the state file writer does not panic")
                .map_err(|e| match e {
                    StateError::Write { path, source } | StateError::Read { path, source } => {
                        CoreError::Persist { path, source }
                    }
                    StateError::Corrupt { path, detail } => CoreError::Persist {
                        path,
                        source: std::io::Error::other(detail),
                    },
                })?;
        }
        let next = Arc::new(next);
        self.inner.router.publish(Arc::clone(&next));
        tracing::info!(
            target: "turnout::admin",
            %command,
            generation = next.generation,
            active = %next.active.name(),
            previous = next.previous.as_ref().map(|p| p.as_str()).unwrap_or("-"),
            "routing changed"
        );
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use turnout_config::Config;

    fn router() -> Router {
        let config = Config::parse(
            "[pools.blue]\nservers=[\"127.0.0.1:3000\"]\n[pools.green]\nservers=[\"127.0.0.1:4000\"]\n\
             [routing]\nactive=\"blue\"\n",
            Path::new("t.toml"),
        )
        .expect("config");
        Router::new(RoutingSnapshot::bootstrap(&config, None).expect("snapshot"))
    }

    #[tokio::test]
    async fn apply_publishes_and_persists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = StateFile::new(dir.path().join("state.json"));
        let control = Control::new(router(), Some(file.clone()));
        let before = control.router().active();
        control
            .apply(Command::Switch { to: "green".into() })
            .await
            .expect("switch");
        assert_eq!(control.router().active().name().as_str(), "green");
        assert_eq!(
            before.name().as_str(),
            "blue",
            "a loaded pool is never changed"
        );
        let saved = file.load().expect("load").expect("written");
        assert_eq!((saved.active.as_str(), saved.generation), ("green", 1));
    }

    #[tokio::test]
    async fn a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A directory where the file should be: the rename fails.
        let path = dir.path().join("state.json");
        std::fs::create_dir(&path).expect("mkdir");
        std::fs::write(path.join("x"), "x").expect("fill");
        let control = Control::new(router(), Some(StateFile::new(&path)));
        let e = control
            .apply(Command::Switch { to: "green".into() })
            .await
            .expect_err("must fail");
        assert!(matches!(e, CoreError::Persist { .. }), "{e}");
        let snap = control.router().snapshot();
        assert_eq!((snap.active.name().as_str(), snap.generation), ("blue", 0));
    }
}
