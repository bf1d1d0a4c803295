//! The in-place upgrade of turnout itself. The running process ([`Handover`]) listens on a Unix
//! socket; a new turnout (`turnout serve --takeover SOCKET`, started by `turnout upgrade`,
//! SIGUSR2 or `POST /v1/upgrade`, or by hand) connects, and receives every listening socket
//! (proxy, HTTPS, admin, and the hand-over socket itself) as file descriptors (SCM_RIGHTS).
//! No socket is ever closed, so no connection is refused and no accept queue is lost.
//!
//! The conversation, one JSON line each way (the sockets ride on the second):
//! 1. new -> old `hello` (or `failed`, when it could not even read its config);
//! 2. old: refuses (`refused`: a pause, a rollout, a prepared switch, an upgrade under way), or
//!    stops changing the state file (every admin change gets 409 from now) and sends
//!    `sockets`: their addresses, the servers its checks found down, the next generation;
//! 3. new: reads the state file, binds (taking the handed sockets by address), starts its
//!    checks, then `ready` (or `failed` with its error, or it dies: the old serves on);
//! 4. old -> new `done`: the old has stopped taking admin calls and stops accepting; the new
//!    serves from here (a new process that never gets `done` exits without serving);
//! 5. the old finishes what is in flight (up to `shutdown_timeout`) and exits 0.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use turnout_admin::{UpgradeError, UpgradeReport};
use turnout_core::{Control, Router};

/// How long the new process has, from its start to `ready` (it reads its config and state,
/// binds, and starts its checks: well under a second normally).
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(60);

/// How long either side waits for the other's next line, outside the new process's start.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The most sockets handed over: proxy, HTTPS, admin, hand-over.
const MAX_FDS: usize = 8;

/// One line of the conversation.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
enum Msg {
    Hello {
        pid: u32,
        version: String,
    },
    Sockets {
        from_pid: u32,
        /// The generation the new process is.
        generation: u64,
        /// The TCP listeners, in the order of the descriptors; the hand-over socket is last.
        listeners: Vec<Listener>,
        /// `POOL SERVER` of each server the old process's checks found down.
        down: Vec<String>,
    },
    Refused {
        error: String,
    },
    Ready {
        pid: u32,
        version: String,
        generation: u64,
    },
    Failed {
        error: String,
    },
    Done,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Listener {
    /// `[server] listen`, `[server] admin`, `[tls] listen`.
    key: String,
    addr: SocketAddr,
}

/// `msg` as it goes on the wire: one JSON line.
fn line(msg: &Msg) -> Vec<u8> {
    let mut line = serde_json::to_vec(msg).expect("a message serializes");
    line.push(b'\n');
    line
}

/// How a server goes in `Msg::Sockets::down`.
fn down_key(pool: &str, server: &str) -> String {
    format!("{pool} {server}")
}

/// A hand-over connection: JSON lines, descriptors alongside.
struct Channel {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Channel {
    fn new(stream: UnixStream) -> Channel {
        Channel {
            stream,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, msg: &Msg, fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
        let line = line(msg);
        let mut sent = 0;
        if !fds.is_empty() {
            // The descriptors go with the first bytes; the rest of the line follows plainly.
            sent = self
                .stream
                .async_io(Interest::WRITABLE, || {
                    let mut space =
                        [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
                    let mut control = SendAncillaryBuffer::new(&mut space);
                    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
                        return Err(std::io::Error::other("too many sockets to hand over"));
                    }
                    rustix::net::sendmsg(
                        &self.stream,
                        &[IoSlice::new(&line)],
                        &mut control,
                        SendFlags::NOSIGNAL,
                    )
                    .map_err(std::io::Error::from)
                })
                .await?;
        }
        self.stream.write_all(&line[sent..]).await
    }

    /// The next line, and any descriptors that came with it.
    async fn recv(&mut self) -> std::io::Result<(Msg, Vec<OwnedFd>)> {
        let mut fds = Vec::new();
        loop {
            if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                let msg = serde_json::from_slice(&line).map_err(|e| {
                    std::io::Error::other(format!(
                        "a hand-over message turnout cannot read ({e}): {}",
                        String::from_utf8_lossy(&line).trim_end()
                    ))
                })?;
                return Ok((msg, fds));
            }
            let mut chunk = [0u8; 4096];
            let (n, got) = self
                .stream
                .async_io(Interest::READABLE, || {
                    let mut space =
                        [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
                    let mut control = RecvAncillaryBuffer::new(&mut space);
                    let got = rustix::net::recvmsg(
                        &self.stream,
                        &mut [IoSliceMut::new(&mut chunk)],
                        &mut control,
                        RecvFlags::CMSG_CLOEXEC,
                    )
                    .map_err(std::io::Error::from)?;
                    if got.flags.contains(ReturnFlags::CTRUNC) {
                        return Err(std::io::Error::other(
                            "more sockets were handed over than turnout takes",
                        ));
                    }
                    let mut received = Vec::new();
                    for message in control.drain() {
                        if let RecvAncillaryMessage::ScmRights(rights) = message {
                            received.extend(rights);
                        }
                    }
                    Ok((got.bytes, received))
                })
                .await?;
            fds.extend(got);
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the other turnout closed the hand-over connection",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Tells the other side no, and why (it may be gone already: nothing to do then).
    async fn refuse(&mut self, error: &str) {
        let msg = Msg::Refused {
            error: error.to_string(),
        };
        let _ = self.send(&msg, &[]).await;
    }

    async fn recv_within(&mut self, limit: Duration) -> std::io::Result<(Msg, Vec<OwnedFd>)> {
        tokio::time::timeout(limit, self.recv())
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {}", humantime::format_duration(limit)),
                ))
            })
    }
}

// ---- The running process -------------------------------------------------------------------

/// The running process's side: the hand-over socket, the sockets it would hand over, and the
/// upgrade it may start itself.
#[derive(Debug)]
pub struct Handover {
    control: Control,
    config: PathBuf,
    /// The binary this process was started from, resolved at start (a binary replaced on disk
    /// since is found at the same path).
    binary: PathBuf,
    /// `[server] upgrade_binaries`: what else an upgrade may start.
    allowed: Vec<PathBuf>,
    /// Whether the admin API asks for a token: naming a binary needs one.
    token: bool,
    socket: PathBuf,
    /// Copies of the listening sockets (the same sockets, not new ones), with their keys, and
    /// of the hand-over socket (handed over last). Emptied by [`Handover::release`] at a
    /// shutdown: a copy kept would hold a port open that nothing accepts on any more.
    sockets: Mutex<Option<Copies>>,
    /// One upgrade started from here at a time.
    starting: tokio::sync::Mutex<()>,
    /// One conversation at a time.
    talking: tokio::sync::Mutex<()>,
    /// The upgrade started from here, waiting for the conversation's outcome.
    waiter: Mutex<Option<tokio::sync::oneshot::Sender<Result<Ready, String>>>>,
    /// Cancelled once a new process serves: this one stops accepting and drains.
    handed: CancellationToken,
    /// Run just before `handed` is cancelled, before the upgrade's caller hears of it: the data
    /// plane's own mark, so that the next HTTP/1 answer says `Connection: close` (a task
    /// watching `handed` would set it a moment later, after the caller may have sent more).
    before_handed: OnceLock<BeforeHanded>,
    /// The pid it handed over to.
    successor: OnceLock<u32>,
}

/// See [`Handover::before_handed`].
struct BeforeHanded(Box<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for BeforeHanded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BeforeHanded")
    }
}

/// Copies of the sockets a hand-over hands over.
#[derive(Debug)]
struct Copies {
    listeners: Vec<(Listener, OwnedFd)>,
    unix: OwnedFd,
}

/// What a new process said when it took over.
#[derive(Debug, Clone)]
struct Ready {
    pid: u32,
    version: String,
    generation: u64,
}

impl Handover {
    /// Takes hand-over connections on `listener` (bound at `socket` by [`bind_socket`], or
    /// handed over by the previous process), keeping copies of the listening `sockets` (each
    /// with the key that configures it) to hand over later.
    pub fn start(
        control: Control,
        config: &Path,
        binaries: Binaries,
        socket: &Path,
        listener: std::os::unix::net::UnixListener,
        sockets: &[(&'static str, &tokio::net::TcpListener)],
    ) -> Result<(Arc<Handover>, UnixListener), String> {
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("the upgrade socket {}: {e}", socket.display()))?;
        let mut listeners = Vec::new();
        for &(key, l) in sockets {
            let addr = l.local_addr().map_err(|e| format!("{key}: {e}"))?;
            let fd = l
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| format!("{key}: cannot keep a copy of the socket: {e}"))?;
            listeners.push((
                Listener {
                    key: key.to_string(),
                    addr,
                },
                fd,
            ));
        }
        let unix = listener
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("the upgrade socket {}: {e}", socket.display()))?;
        let binary = std::env::current_exe()
            .and_then(std::fs::canonicalize)
            .map_err(|e| format!("cannot tell which binary this turnout runs: {e}"))?;
        // A config path the new process finds whatever its working directory.
        let config = std::path::absolute(config).unwrap_or_else(|_| config.to_path_buf());
        let handover = Arc::new(Handover {
            control,
            config,
            binary,
            allowed: binaries.allowed,
            token: binaries.token,
            socket: socket.to_path_buf(),
            sockets: Mutex::new(Some(Copies { listeners, unix })),
            starting: tokio::sync::Mutex::new(()),
            talking: tokio::sync::Mutex::new(()),
            waiter: Mutex::new(None),
            handed: CancellationToken::new(),
            before_handed: OnceLock::new(),
            successor: OnceLock::new(),
        });
        let listener = UnixListener::from_std(listener)
            .map_err(|e| format!("the upgrade socket {}: {e}", socket.display()))?;
        Ok((handover, listener))
    }

    /// Cancelled once a new process serves.
    pub fn handed(&self) -> CancellationToken {
        self.handed.clone()
    }

    /// Runs `mark` once a new process serves, before anything else hears of it (the
    /// upgrade's caller included). Set once; a second call is ignored.
    pub fn before_handed(&self, mark: impl Fn() + Send + Sync + 'static) {
        let _ = self.before_handed.set(BeforeHanded(Box::new(mark)));
    }

    /// The pid of the process it handed over to, once it did.
    pub fn successor(&self) -> Option<u32> {
        self.successor.get().copied()
    }

    /// The hand-over socket's path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Takes hand-over connections until a new process serves.
    pub async fn accept(self: Arc<Self>, listener: UnixListener) {
        loop {
            let stream = tokio::select! {
                () = self.handed.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "upgrade socket: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            // The socket is owner-only, but it is bound before its mode is set: a process of
            // another user that connected in that moment is still turned away here.
            let me = rustix::process::geteuid().as_raw();
            match stream.peer_cred() {
                Ok(c) if c.uid() == me || c.uid() == 0 => {}
                Ok(c) => {
                    tracing::warn!(
                        uid = c.uid(),
                        "upgrade socket: refused a process of another user"
                    );
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "upgrade socket: cannot tell who connected; refused");
                    continue;
                }
            }
            let this = Arc::clone(&self);
            tokio::spawn(async move { this.talk(Channel::new(stream)).await });
        }
    }

    /// At a shutdown: closes the copies of the sockets (so each closes with the listener that
    /// uses it, and a port is refused rather than left accepting into a queue nobody reads),
    /// and refuses hand-overs from now on.
    pub fn release(&self) {
        self.sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// Why a hand-over cannot happen now, if it cannot.
    fn refusal(&self) -> Option<String> {
        if let Some(pid) = self.successor() {
            return Some(format!("this turnout has already handed over to pid {pid}"));
        }
        if self
            .sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
        {
            return Some("this turnout is shutting down".into());
        }
        let snapshot = self.control.router().snapshot();
        if let Some(pause) = &snapshot.pause {
            return Some(format!(
                "a pause is on here ({} request(s) held), and held requests cannot move to another process: resume first (turnout resume)",
                pause.stats().held
            ));
        }
        if let Some(r) = self
            .control
            .rollouts()
            .current()
            .filter(|r| r.finished_at.is_none())
        {
            return Some(format!(
                "rollout {} of pool {:?} is under way: let it finish or abort it first",
                r.id, r.target
            ));
        }
        if self.control.two_phase().prepared().is_some() {
            return Some(
                "a prepared switch waits for its commit here (a fleet switch): commit or abort it first"
                    .into(),
            );
        }
        None
    }

    /// One conversation with a process that wants to take over.
    async fn talk(&self, mut channel: Channel) {
        let outcome = match self.talking.try_lock() {
            Ok(_one) => self.converse(&mut channel).await,
            Err(_) => {
                let error = "another turnout is taking over right now".to_string();
                channel.refuse(&error).await;
                Err(error)
            }
        };
        if let Err(e) = &outcome {
            tracing::error!(error = %e, "upgrade: the new process did not take over; this one serves on");
            self.control.router().snapshot().env.events.push(
                "upgrade",
                format!("an upgrade failed and this turnout serves on: {e}"),
            );
        }
        let waiter = self.waiter.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(waiter) = waiter {
            let _ = waiter.send(outcome);
        }
    }

    async fn converse(&self, channel: &mut Channel) -> Result<Ready, String> {
        let (pid, version) = match channel.recv_within(STEP_TIMEOUT).await {
            Ok((Msg::Hello { pid, version }, _)) => (pid, version),
            Ok((Msg::Failed { error }, _)) => return Err(error),
            Ok((other, _)) => return Err(format!("unexpected hand-over message {other:?}")),
            Err(e) => return Err(format!("the hand-over broke off: {e}")),
        };
        // Checked under the writer lock: a pause, a rollout or a prepared switch that lands
        // after the check cannot be cut in two by the hand-over (changes after the freeze are
        // refused with 409).
        if let Err(error) = self
            .control
            .freeze_unless(format!("handing over to pid {pid}"), |_| self.refusal())
            .await
        {
            channel.refuse(&error).await;
            return Err(format!("refused: {error}"));
        }
        tracing::info!(pid, %version, "upgrade: a new turnout is taking over; routing changes are refused until it serves");
        let result = self.hand(channel, pid).await;
        match &result {
            Ok(ready) => {
                let _ = self.successor.set(ready.pid);
                if let Some(mark) = self.before_handed.get() {
                    (mark.0)();
                }
                self.handed.cancel();
                // The new process serves once it reads this; a failure here is its to report.
                let _ = channel.send(&Msg::Done, &[]).await;
                tracing::info!(pid = ready.pid, version = %ready.version, generation = ready.generation, "upgrade: handed over; no longer accepting; finishing what is in flight");
            }
            Err(_) => self.control.thaw(),
        }
        result
    }

    async fn hand(&self, channel: &mut Channel, pid: u32) -> Result<Ready, String> {
        let snapshot = self.control.router().snapshot();
        let mut down = Vec::new();
        for (name, pool) in &snapshot.pools {
            for server in pool.servers() {
                if !server.health.is_up() {
                    down.push(down_key(name.as_str(), server.addr.as_str()));
                }
            }
        }
        let generation = turnout_core::process::generation() + 1;
        // Copies of the copies, so no lock is held while they are sent.
        let (listeners, owned) = {
            let sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
            let Some(Copies { listeners, unix }) = sockets.as_ref() else {
                return Err("this turnout is shutting down".into());
            };
            let mut owned = Vec::new();
            for fd in listeners.iter().map(|(_, fd)| fd).chain([unix]) {
                owned.push(
                    fd.try_clone()
                        .map_err(|e| format!("cannot hand the sockets over: {e}"))?,
                );
            }
            let listeners: Vec<Listener> = listeners.iter().map(|(l, _)| l.clone()).collect();
            (listeners, owned)
        };
        let fds: Vec<BorrowedFd<'_>> = owned.iter().map(AsFd::as_fd).collect();
        let msg = Msg::Sockets {
            from_pid: std::process::id(),
            generation,
            listeners,
            down,
        };
        channel
            .send(&msg, &fds)
            .await
            .map_err(|e| format!("cannot hand the sockets to pid {pid}: {e}"))?;
        match channel.recv_within(HANDOVER_TIMEOUT).await {
            Ok((
                Msg::Ready {
                    pid,
                    version,
                    generation,
                },
                _,
            )) => Ok(Ready {
                pid,
                version,
                generation,
            }),
            Ok((Msg::Failed { error }, _)) => Err(error),
            Ok((other, _)) => Err(format!("unexpected hand-over message {other:?}")),
            Err(e) => Err(format!("pid {pid} stopped before serving: {e}")),
        }
    }

    /// The file to run for a `binary` named by the caller, or why it may not run. Only this
    /// process's own executable (resolved at start; what is at that path now is what runs) or
    /// a path in `[server] upgrade_binaries` may be named, only with an admin token (it starts
    /// a program as turnout's user, often root), and only a file that no one but its owner
    /// (root or turnout's user) can change. The path returned is the resolved one, so a
    /// symbolic link swapped after this check does not change what runs.
    fn permit(&self, named: &Path) -> Result<PathBuf, String> {
        let key = "[server] upgrade_binaries";
        if !named.is_absolute() {
            return Err(format!(
                "binary {} must be an absolute path listed in {key}",
                named.display()
            ));
        }
        let real = std::fs::canonicalize(named).ok();
        let listed = |p: &PathBuf| std::fs::canonicalize(p).ok() == real;
        let own = real.as_ref() == Some(&self.binary);
        if real.is_none() || !(own || self.allowed.iter().any(listed)) {
            return Err(format!(
                "binary {} may not be started: an upgrade runs this turnout's own executable ({}) or a path listed in {key}, and nothing else; nothing was run",
                named.display(),
                self.binary.display()
            ));
        }
        if !own && !self.token {
            return Err(format!(
                "naming binary {} needs [server] admin_token (or TURNOUT_ADMIN_TOKEN), even on loopback: without one, any local user could start it; nothing was run",
                named.display()
            ));
        }
        let real = real.expect("checked above");
        check_owner(&real)?;
        Ok(real)
    }

    /// A reload: the config file checked first by the binary that will read it (`BINARY check
    /// --config FILE`: a package upgrade may have put a newer turnout, which knows keys this
    /// one does not, at this process's path), and a file that fails leaves this process
    /// untouched and says why; then an upgrade to that binary, which reads the file.
    pub async fn reload(self: Arc<Self>) -> Result<UpgradeReport, UpgradeError> {
        // A process that handed over (or is shutting down) reloads nothing: its successor does.
        if let Some(why) = self.refusal() {
            return Err(UpgradeError::Refused(why));
        }
        let check = tokio::process::Command::new(&self.binary)
            .arg("check")
            .arg("--config")
            .arg(&self.config)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = match tokio::time::timeout(STEP_TIMEOUT * 3, check).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => {
                return Err(UpgradeError::Invalid(format!(
                    "cannot run {} check: {e}",
                    self.binary.display()
                )))
            }
            Err(_) => {
                return Err(UpgradeError::Invalid(format!(
                    "{} check --config {} did not finish",
                    self.binary.display(),
                    self.config.display()
                )))
            }
        };
        if !output.status.success() {
            let said = String::from_utf8_lossy(&output.stderr);
            return Err(UpgradeError::Invalid(said.trim().to_owned()));
        }
        tracing::info!(config = %self.config.display(), "reload: the config file passes its check");
        self.upgrade(None).await
    }

    /// Starts `binary` (this process's own unless given) as a new turnout taking over, and
    /// answers once it serves or failed.
    pub async fn upgrade(
        self: Arc<Self>,
        binary: Option<PathBuf>,
    ) -> Result<UpgradeReport, UpgradeError> {
        let refused = UpgradeError::Refused;
        let Ok(_one) = self.starting.try_lock() else {
            return Err(refused("an upgrade is already under way".into()));
        };
        if let Some(why) = self.refusal() {
            return Err(refused(why));
        }
        let failed = |message: String| UpgradeError::Failed {
            pid: std::process::id(),
            message,
        };
        let binary = match binary {
            None => self.binary.clone(),
            Some(named) => self.permit(&named).map_err(UpgradeError::Forbidden)?,
        };
        let started = Instant::now();
        let (tx, rx) = tokio::sync::oneshot::channel();
        *self.waiter.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        tracing::info!(binary = %binary.display(), "upgrade: starting a new turnout to take over");
        let mut cmd = tokio::process::Command::new(&binary);
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config)
            .arg("--takeover")
            .arg(&self.socket)
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES")
            .stdin(std::process::Stdio::null());
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                self.waiter.lock().unwrap_or_else(|e| e.into_inner()).take();
                return Err(failed(format!("cannot run {}: {e}", binary.display())));
            }
        };
        let child_pid = child.id().unwrap_or(0);
        tokio::pin!(rx);
        let outcome = tokio::select! {
            outcome = &mut rx => outcome.unwrap_or_else(|_| Err("the hand-over ended without an outcome".into())),
            status = child.wait() => {
                // Its last words (a config error, say) may still be on their way.
                let said = match tokio::time::timeout(Duration::from_secs(2), &mut rx).await {
                    Ok(Ok(outcome)) => Some(outcome),
                    _ => None,
                };
                let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                match said {
                    Some(Ok(ready)) => Ok(ready),
                    Some(Err(error)) => Err(format!("{error} (the new process, pid {child_pid}, exited with {status})")),
                    None => Err(format!("the new process ({}, pid {child_pid}) exited with {status} before taking over; its output is in this turnout's log", binary.display())),
                }
            }
            () = tokio::time::sleep(HANDOVER_TIMEOUT + STEP_TIMEOUT) => {
                Err(format!("the new process (pid {child_pid}) did not take over within {}", humantime::format_duration(HANDOVER_TIMEOUT)))
            }
        };
        self.waiter.lock().unwrap_or_else(|e| e.into_inner()).take();
        match outcome {
            Ok(ready) => Ok(UpgradeReport {
                from_pid: std::process::id(),
                pid: ready.pid,
                version: ready.version,
                generation: ready.generation,
                binary: binary.display().to_string(),
                took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            }),
            Err(message) => {
                // It must not linger half-started; it has not served.
                let _ = child.start_kill();
                let _ = child.wait().await;
                Err(failed(message))
            }
        }
    }
}

/// What an upgrade may start besides this process's own executable.
#[derive(Debug, Default)]
pub struct Binaries {
    /// `[server] upgrade_binaries`.
    pub allowed: Vec<PathBuf>,
    /// The admin API asks for a token.
    pub token: bool,
}

/// A binary turnout would start must be a regular file that only root or turnout's own user
/// can change: one that anyone else can write to (or whose owner is someone else) could be
/// replaced with any program between an operator's listing and an upgrade.
fn check_owner(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("binary {}: {e}", path.display()))?;
    let me = rustix::process::geteuid().as_raw();
    if !meta.is_file() {
        return Err(format!("binary {} is not a file", path.display()));
    }
    if meta.uid() != 0 && meta.uid() != me {
        return Err(format!(
            "binary {} belongs to uid {}, neither root nor turnout's user (uid {me}): refused, nothing was run",
            path.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "binary {} can be changed by its group or by others (mode {:o}): refused, nothing was run",
            path.display(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Binds the hand-over socket at `path`, owner-only. A socket file left by a turnout that is
/// gone is replaced; one a live turnout answers on is not (two turnouts with one state file).
///
/// The error comes with the exit code for it: 1 for a turnout running there, 73 (EX_CANTCREAT)
/// when the socket cannot be made.
pub fn bind_socket(path: &Path) -> Result<std::os::unix::net::UnixListener, (u8, String)> {
    if path.exists() {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err((1, format!(
                    "the upgrade socket {} belongs to a turnout that is running (two turnouts with one state file?); to take over from it, run `turnout serve --takeover {}`",
                    path.display(),
                    path.display()
                )))
            }
            Err(_) => {
                let _ = std::fs::remove_file(path);
            }
        }
    }
    let cannot = |e: std::io::Error| {
        (
            crate::exit::EX_CANTCREAT,
            format!(
                "cannot listen on the upgrade socket {} ([server] upgrade_socket): {e}",
                path.display()
            ),
        )
    };
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(cannot)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(cannot)?;
    Ok(listener)
}

/// [`Handover`] as the admin API's `POST /v1/upgrade`.
#[derive(Debug)]
pub struct UpgradeHandle(pub Arc<Handover>);

impl turnout_admin::Upgrader for UpgradeHandle {
    fn upgrade(
        &self,
        binary: Option<PathBuf>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<UpgradeReport, UpgradeError>> + Send + 'static>,
    > {
        Box::pin(Arc::clone(&self.0).upgrade(binary))
    }

    fn reload(
        &self,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<UpgradeReport, UpgradeError>> + Send + 'static>,
    > {
        Box::pin(Arc::clone(&self.0).reload())
    }
}

// ---- The new process -----------------------------------------------------------------------

/// The new process's side, from `hello` until `done`. Dropped before `done`, it tells the old
/// process why it failed (its last error), so `turnout upgrade` can say it.
#[derive(Debug)]
pub struct Takeover {
    channel: Option<Channel>,
    /// The process taken over from.
    pub from_pid: u32,
    /// This process's generation (its predecessor's plus one).
    pub generation: u64,
    /// The TCP listeners handed over: the key each served, its address.
    pub listeners: Vec<(String, SocketAddr, std::net::TcpListener)>,
    /// The hand-over socket itself, for this process's own later upgrades.
    pub unix: Option<std::os::unix::net::UnixListener>,
    /// `POOL SERVER` of the servers the old process found down.
    down: Vec<String>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").finish_non_exhaustive()
    }
}

impl Takeover {
    /// Connects to the running turnout at `socket` and receives its sockets; from here on it
    /// changes no routing until this process serves or gives up.
    pub async fn connect(socket: &Path) -> Result<Takeover, String> {
        let stream = UnixStream::connect(socket).await.map_err(|e| {
            format!(
                "--takeover: no turnout to take over from at {}: {e}",
                socket.display()
            )
        })?;
        let mut channel = Channel::new(stream);
        let hello = Msg::Hello {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
        };
        let broke = |e: std::io::Error| format!("--takeover: the hand-over broke off: {e}");
        channel.send(&hello, &[]).await.map_err(broke)?;
        let (msg, mut fds) = channel.recv_within(STEP_TIMEOUT).await.map_err(broke)?;
        let (from_pid, generation, listeners, down) = match msg {
            Msg::Sockets {
                from_pid,
                generation,
                listeners,
                down,
            } => (from_pid, generation, listeners, down),
            Msg::Refused { error } => {
                return Err(format!("--takeover: the running turnout refused: {error}"))
            }
            other => {
                return Err(format!(
                    "--takeover: unexpected hand-over message {other:?}"
                ))
            }
        };
        if fds.len() != listeners.len() + 1 {
            return Err(format!(
                "--takeover: {} sockets announced, {} received",
                listeners.len() + 1,
                fds.len()
            ));
        }
        let unix = std::os::unix::net::UnixListener::from(fds.pop().expect("counted above"));
        let listeners = listeners
            .into_iter()
            .zip(fds)
            .map(|(l, fd)| (l.key, l.addr, std::net::TcpListener::from(fd)))
            .collect();
        Ok(Takeover {
            channel: Some(channel),
            from_pid,
            generation,
            listeners,
            unix: Some(unix),
            down,
        })
    }

    /// Marks down, in `router`'s pools, the servers the previous process's checks found down:
    /// they stay down until this process's checks find them up (rather than each new process
    /// starting with every server up).
    pub fn mark_down(&self, router: &Router) {
        let snapshot = router.snapshot();
        for (name, pool) in &snapshot.pools {
            for server in pool.servers() {
                if self
                    .down
                    .contains(&down_key(name.as_str(), server.addr.as_str()))
                {
                    server.health.set_up(false);
                }
            }
        }
    }

    /// Tells the old process this one is ready, and waits for its `done`: only then may this
    /// process serve (without it, the old one gave up and serves on).
    pub async fn commit(&mut self) -> Result<(), String> {
        let mut channel = self.channel.take().expect("committed once");
        let ready = Msg::Ready {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            generation: self.generation,
        };
        let broke = |e: std::io::Error| {
            format!(
                "--takeover: pid {} did not confirm the hand-over, so it serves on: {e}",
                self.from_pid
            )
        };
        channel.send(&ready, &[]).await.map_err(broke)?;
        match channel.recv_within(STEP_TIMEOUT).await.map_err(broke)? {
            (Msg::Done, _) => Ok(()),
            (other, _) => Err(format!(
                "--takeover: unexpected hand-over message {other:?}"
            )),
        }
    }
}

impl Drop for Takeover {
    fn drop(&mut self) {
        if let Some(channel) = self.channel.take() {
            let error = crate::exit::last_error()
                .unwrap_or_else(|| "the new process stopped before serving".into());
            report_failure(channel.stream.into_std().ok(), &error);
        }
    }
}

/// Tells the turnout at `socket` that this process, started to take over, failed with `error`
/// before it could even connect properly (a config it could not read).
pub fn report_failure_to(socket: &Path, error: &str) {
    report_failure(std::os::unix::net::UnixStream::connect(socket).ok(), error);
}

fn report_failure(stream: Option<std::os::unix::net::UnixStream>, error: &str) {
    use std::io::Write;
    let Some(mut stream) = stream else { return };
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(&line(&Msg::Failed {
        error: error.to_string(),
    }));
}

/// systemd's readiness protocol (`Type=notify`), a no-op without `NOTIFY_SOCKET`: ready, with
/// this process as the service's main one (after an upgrade, the new process is).
pub fn notify_ready() {
    if let Err(e) = sd_notify::notify(
        false,
        &[
            sd_notify::NotifyState::MainPid(std::process::id()),
            sd_notify::NotifyState::Ready,
        ],
    ) {
        tracing::warn!(error = %e, "cannot tell systemd turnout is ready (NOTIFY_SOCKET)");
    }
}

/// Tells systemd this process is stopping (a no-op without `NOTIFY_SOCKET`).
pub fn notify_stopping() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
}

#[cfg(test)]
mod tests {
    //! The hand-over's wire, in-process over a socket pair: lines and descriptors both ways,
    //! a refusal, and what a broken or truncated conversation gives.

    use std::os::fd::AsFd;

    use super::*;

    fn pair() -> (Channel, Channel) {
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        for s in [&a, &b] {
            s.set_nonblocking(true).expect("nonblocking");
        }
        (
            Channel::new(UnixStream::from_std(a).expect("tokio")),
            Channel::new(UnixStream::from_std(b).expect("tokio")),
        )
    }

    #[tokio::test]
    async fn sockets_cross_with_their_line_and_still_listen() {
        let (mut old, mut new) = pair();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let msg = Msg::Sockets {
            from_pid: 1,
            generation: 2,
            listeners: vec![Listener {
                key: "[server] listen".into(),
                addr,
            }],
            down: vec![down_key("blue", "127.0.0.1:3000")],
        };
        old.send(&msg, &[listener.as_fd()]).await.expect("send");
        let (got, fds) = new.recv_within(STEP_TIMEOUT).await.expect("recv");
        let Msg::Sockets {
            generation,
            listeners,
            down,
            ..
        } = got
        else {
            panic!("not the sockets: {got:?}");
        };
        assert_eq!((generation, listeners[0].addr), (2, addr));
        assert_eq!(down, ["blue 127.0.0.1:3000"]);
        assert_eq!(fds.len(), 1);
        // The received descriptor is the same listening socket: a connection to it is
        // accepted through the copy, after the original is closed.
        drop(listener);
        let copy = std::net::TcpListener::from(fds.into_iter().next().expect("fd"));
        assert_eq!(copy.local_addr().expect("addr"), addr);
        let _client = std::net::TcpStream::connect(addr).expect("connect through the copy");
        copy.accept().expect("accepted on the copy");

        // Lines without descriptors, the other way, several in one read.
        new.send(
            &Msg::Ready {
                pid: 7,
                version: "x".into(),
                generation: 2,
            },
            &[],
        )
        .await
        .expect("send");
        new.send(&Msg::Done, &[]).await.expect("send");
        assert!(matches!(old.recv().await, Ok((Msg::Ready { pid: 7, .. }, f)) if f.is_empty()));
        assert!(matches!(old.recv().await, Ok((Msg::Done, _))));
    }

    #[tokio::test]
    async fn a_refusal_says_why() {
        let (mut old, mut new) = pair();
        old.refuse("a pause is on here").await;
        match new.recv().await {
            Ok((Msg::Refused { error }, _)) => assert_eq!(error, "a pause is on here"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_truncated_or_garbled_line_is_an_error_not_a_message() {
        let (old, mut new) = pair();
        // Half a line, then the other side is gone.
        let mut raw = old.stream;
        raw.write_all(br#"{"msg":"ready","pid":7"#)
            .await
            .expect("write");
        drop(raw);
        let e = new.recv().await.expect_err("no whole line came");
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");

        let (old, mut new) = pair();
        let mut raw = old.stream;
        raw.write_all(b"{\"msg\":\"launch_missiles\"}\n")
            .await
            .expect("write");
        let e = new.recv().await.expect_err("no such message");
        assert!(e.to_string().contains("cannot read"), "{e}");

        // Nothing at all within the limit.
        let (_old, mut new) = pair();
        let e = new
            .recv_within(Duration::from_millis(50))
            .await
            .expect_err("silence");
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    }

    /// Far more descriptors than the control buffer holds (it is sized for `MAX_FDS`, rounded
    /// up to the kernel's alignment) are refused before anything is sent.
    #[tokio::test]
    async fn more_sockets_than_turnout_takes_are_refused() {
        let (mut old, _new) = pair();
        let many: Vec<std::net::TcpListener> = (0..=2 * MAX_FDS)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
            .collect();
        let fds: Vec<BorrowedFd<'_>> = many.iter().map(AsFd::as_fd).collect();
        let e = old.send(&Msg::Done, &fds).await.expect_err("too many");
        assert!(e.to_string().contains("too many sockets"), "{e}");
    }
}
