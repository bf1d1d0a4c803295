//! Runs the real `turnout` binary for end-to-end tests. A [`Sandbox`] is a temporary directory
//! holding the config and the state file, so a test can stop turnout and start it again on the
//! same state. The binary's ports come from its "turnout is serving" log line (it binds
//! `127.0.0.1:0`), and its whole log is kept for failure messages.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A temporary home for one turnout: `turnout.toml` and `state.json`.
#[derive(Debug)]
pub struct Sandbox {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Sandbox {
    /// `bin` is the binary under test: `env!("CARGO_BIN_EXE_turnout")` in the test crate.
    pub fn new(bin: &str) -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().expect("tempdir"),
            bin: PathBuf::from(bin),
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("turnout.toml")
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.path().join("state.json")
    }

    /// Writes the config file.
    pub fn write_config(&self, text: &str) -> &Sandbox {
        std::fs::write(self.config_path(), text).expect("write config");
        self
    }

    /// A config with both ports on `127.0.0.1:0`, this sandbox's state file, a zero shutdown
    /// delay (unless `extra_server` sets one), the given pools (name, servers) and `active`,
    /// plus `extra_server` lines for `[server]`.
    pub fn config(&self, pools: &[(&str, &[String])], active: &str, extra_server: &str) -> String {
        let delay = if extra_server.contains("shutdown_delay") {
            ""
        } else {
            "shutdown_delay = \"0s\"\n"
        };
        let mut text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{delay}{extra_server}\n\
             [state]\nfile = {:?}\n\n",
            self.state_path().display().to_string()
        );
        for (name, servers) in pools {
            text.push_str(&format!("[pools.{name}]\nservers = {servers:?}\n\n"));
        }
        text.push_str(&format!("[routing]\nactive = \"{active}\"\n"));
        text
    }

    /// A `turnout` command with this sandbox's config, ready to run to completion.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env("RUST_LOG", "info")
            .env_remove("TURNOUT_ADMIN_TOKEN");
        cmd
    }

    /// Runs `turnout serve` with this config to its end (for configs that must be refused).
    pub fn serve_to_exit(&self) -> std::process::Output {
        self.serve_command().output().expect("run turnout serve")
    }

    /// Starts `turnout serve` and waits (at most 20 s) until it serves.
    pub async fn start(&self) -> Result<Turnout, String> {
        self.start_with_env(&[]).await
    }

    pub async fn start_with_env(&self, env: &[(&str, &str)]) -> Result<Turnout, String> {
        let mut cmd = self.serve_command();
        cmd.envs(env.iter().copied());
        self.start_command(cmd).await
    }

    /// `turnout serve --config FILE` followed by `args`; waits (at most 20 s) until it serves.
    pub async fn start_with_args(&self, args: &[&str]) -> Result<Turnout, String> {
        let mut cmd = self.serve_command();
        cmd.args(args);
        self.start_command(cmd).await
    }

    /// `turnout serve --config FILE` with this sandbox's config.
    fn serve_command(&self) -> Command {
        let config = self.config_path().display().to_string();
        self.command(&["serve", "--config", &config])
    }

    /// `turnout serve` run by `wrapper` (a program and its arguments, which then run turnout's
    /// path and its arguments: `systemd-socket-activate -l ADDR`), with `RUST_LOG=info` passed
    /// through as `-E`; waits (at most 20 s) until it serves.
    pub async fn start_wrapped(&self, wrapper: &[&str]) -> Result<Turnout, String> {
        let config = self.config_path().display().to_string();
        let mut cmd = Command::new(wrapper[0]);
        cmd.args(&wrapper[1..])
            .args(["-E", "RUST_LOG=info"])
            .arg(&self.bin)
            .args(["serve", "--config", &config]);
        self.start_command(cmd).await
    }

    async fn start_command(&self, mut cmd: Command) -> Result<Turnout, String> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let logs = Arc::clone(&logs);
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    logs.lock().expect("log lock").push(line);
                }
            });
        }
        let mut turnout = Turnout {
            child,
            proxy: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            logs,
            successors: Mutex::new(Vec::new()),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(line) = turnout.find_log("turnout is serving") {
                turnout.proxy =
                    field(&line, "proxy=").ok_or_else(|| format!("no proxy= in {line}"))?;
                turnout.admin =
                    field(&line, "admin=").ok_or_else(|| format!("no admin= in {line}"))?;
                return Ok(turnout);
            }
            if let Ok(Some(status)) = turnout.child.try_wait() {
                // Let the reader threads catch the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Err(format!(
                    "turnout exited with {status} before serving:\n{}",
                    turnout.logs()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "turnout did not serve within 20s:\n{}",
                    turnout.logs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The address after `key` (`proxy=`) in a text line, or under the key's name in a JSON line
/// (`[log] format = "json"`: `"proxy":"127.0.0.1:8080"`).
fn field(line: &str, key: &str) -> Option<SocketAddr> {
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(line) {
        return map.get(key.trim_end_matches('='))?.as_str()?.parse().ok();
    }
    let at = line.find(key)? + key.len();
    line[at..].split_whitespace().next()?.parse().ok()
}

/// A running turnout process; killed when dropped, with every process that took over from it
/// through [`Turnout::upgrade`].
#[derive(Debug)]
pub struct Turnout {
    child: Child,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    /// The pids of the processes that took over (in-place upgrades), newest last.
    successors: Mutex<Vec<u32>>,
}

impl Turnout {
    /// `http://127.0.0.1:PORT` of the proxy port, followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// `GET /v1/status` (without a token).
    pub async fn status(&self) -> serde_json::Value {
        let (status, json) = crate::client::admin(
            &format!("http://{}", self.admin),
            http::Method::GET,
            "/v1/status",
            None,
            None,
        )
        .await;
        assert!(status.is_success(), "GET /v1/status: {status} {json}");
        json
    }

    /// `GET /metrics` (without a token): the Prometheus text.
    pub async fn metrics(&self) -> String {
        crate::client::get(&crate::client::http_client(), &self.admin_url("/metrics"))
            .await
            .expect("metrics")
            .body
    }

    /// Waits (at most `secs`) until `GET path` through the proxy answers `status`.
    pub async fn wait_for_status(&self, path: &str, status: u16, secs: u64) {
        let url = self.url(path);
        crate::eventually(secs, &format!("GET {path} answers {status}"), || async {
            crate::client::get(&crate::client::http_client(), &url)
                .await
                .is_ok_and(|a| a.status == status)
        })
        .await;
    }

    /// Everything turnout logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().expect("log lock").join("\n")
    }

    pub fn find_log(&self, needle: &str) -> Option<String> {
        self.logs
            .lock()
            .expect("log lock")
            .iter()
            .find(|l| l.contains(needle))
            .cloned()
    }

    /// `POST /v1/upgrade` (with `body`, JSON): a new turnout takes over. The answer, as it came;
    /// on success the new process is killed with this handle.
    pub async fn upgrade(&self, body: Option<&str>) -> (http::StatusCode, serde_json::Value) {
        let (status, json) = crate::client::admin(
            &self.admin_url(""),
            http::Method::POST,
            "/v1/upgrade",
            body,
            None,
        )
        .await;
        if let Some(pid) = json["pid"].as_u64().filter(|_| status.is_success()) {
            self.adopt(u32::try_from(pid).expect("a pid"));
        }
        (status, json)
    }

    /// Kills process `pid` (one that took over from this one) with this handle.
    pub fn adopt(&self, pid: u32) {
        self.successors.lock().expect("pid lock").push(pid);
    }

    /// The pid of the process this handle started.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The pid of the process serving now: the last to take over, or the first.
    pub fn serving_pid(&self) -> u32 {
        self.successors
            .lock()
            .expect("pid lock")
            .last()
            .copied()
            .unwrap_or_else(|| self.child.id())
    }

    /// Sends a signal by name (TERM, INT) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {name} failed");
    }

    /// Waits (at most `secs`) for the process to exit.
    pub async fn wait_exit(&mut self, secs: u64) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                panic!("turnout did not exit within {secs}s:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The resident memory of the process now, in KiB (Linux `VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// The peak resident memory of the process so far, in KiB (Linux `VmHWM`).
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    /// A `/proc/PID/status` field given in kB.
    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
    }
}

impl Drop for Turnout {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let pids = self
            .successors
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default();
        for pid in pids {
            let _ = Command::new("kill")
                .args(["-s", "KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}
