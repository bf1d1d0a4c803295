//! A real etcd for the fleet tests (Debian's `etcd-server`): one member, or a cluster of three,
//! each on loopback ports picked free, in a temporary data directory; members can be killed
//! (SIGKILL) and started again on the same data. Killed when dropped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One etcd member's process and addresses.
#[derive(Debug)]
struct Node {
    name: String,
    client_port: u16,
    peer_port: u16,
    /// Plain HTTP `/health` and metrics (the client port may speak TLS).
    metrics_port: u16,
    child: Option<Child>,
}

/// A running etcd cluster on loopback.
#[derive(Debug)]
pub struct Etcd {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
    initial: String,
    /// The server certificate and key (PEM files): clients then speak TLS.
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Etcd {
    /// One member.
    pub fn start() -> Etcd {
        Etcd::cluster(1)
    }

    /// `n` members, started together; returns once every member answers its health endpoint
    /// (at most 20 s).
    pub fn cluster(n: usize) -> Etcd {
        Etcd::start_with(n, None)
    }

    /// One member whose clients speak TLS, with the certificate and key at these PEM files.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Etcd {
        Etcd::start_with(1, Some((cert.to_path_buf(), key.to_path_buf())))
    }

    fn start_with(n: usize, tls: Option<(std::path::PathBuf, std::path::PathBuf)>) -> Etcd {
        let dir = tempfile::tempdir().expect("temp dir");
        let nodes: Vec<Node> = (0..n)
            .map(|i| Node {
                name: format!("e{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                metrics_port: free_port(),
                child: None,
            })
            .collect();
        let initial = nodes
            .iter()
            .map(|n| format!("{}=http://127.0.0.1:{}", n.name, n.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = Etcd {
            dir,
            nodes,
            initial,
            tls,
        };
        for i in 0..n {
            etcd.spawn(i);
        }
        etcd.wait_healthy();
        etcd
    }

    fn spawn(&mut self, i: usize) {
        let data = self.dir.path().join(&self.nodes[i].name);
        let log =
            std::fs::File::create(self.dir.path().join(format!("{}.log", self.nodes[i].name)))
                .expect("etcd log file");
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let node = &mut self.nodes[i];
        let client = format!("{scheme}://127.0.0.1:{}", node.client_port);
        let peer = format!("http://127.0.0.1:{}", node.peer_port);
        let metrics = format!("http://127.0.0.1:{}", node.metrics_port);
        let mut cmd = Command::new("etcd");
        if let Some((cert, key)) = &self.tls {
            cmd.arg("--cert-file").arg(cert).arg("--key-file").arg(key);
        }
        let child = cmd
            .args(["--name", &node.name])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--listen-metrics-urls", &metrics])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "turnout-test"])
            // Short elections, so that a killed leader is replaced within the test's bounds.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run etcd (Debian's etcd-server package)");
        node.child = Some(child);
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Member `i`'s client URL.
    pub fn endpoint(&self, i: usize) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.nodes[i].client_port)
    }

    /// The TOML array of the endpoints, for `[fleet] etcd`.
    pub fn toml_endpoints(&self) -> String {
        let quoted: Vec<String> = self.endpoints().iter().map(|e| format!("{e:?}")).collect();
        format!("[{}]", quoted.join(", "))
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data.
    pub fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "member {i} is running");
        self.spawn(i);
    }

    /// The index of the member that leads now (asked of each running member's status through
    /// etcd's JSON gateway), if one does. Plain HTTP clusters only.
    pub fn leader(&self) -> Option<usize> {
        for (i, node) in self.nodes.iter().enumerate() {
            if node.child.is_none() {
                continue;
            }
            let Some(status) = post_json(node.client_port, "/v3/maintenance/status") else {
                continue;
            };
            let member = status["header"]["member_id"].as_str();
            if member.is_some() && member == status["leader"].as_str() {
                return Some(i);
            }
        }
        None
    }

    /// Waits (at most 20 s) until every running member answers `/health` with health true.
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for (i, node) in self.nodes.iter().enumerate() {
            if node.child.is_none() {
                continue;
            }
            loop {
                if get_health(node.metrics_port) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd member {i} not healthy within 20s: {}",
                    self.log(i)
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Member `i`'s log.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", self.nodes[i].name)))
            .unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// One HTTP/1.0 exchange with a member on loopback (std only: these calls run outside any
/// runtime, between the test's steps); the body of the answer.
fn exchange(port: u16, request: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    // Go answers an HTTP/1.0 request with an HTTP/1.0 status line.
    (head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200")).then(|| body.to_string())
}

fn get_health(port: u16) -> bool {
    exchange(port, "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
        .is_some_and(|j| j["health"] == "true")
}

fn post_json(port: u16, path: &str) -> Option<serde_json::Value> {
    let req = format!(
        "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    exchange(port, &req).and_then(|b| serde_json::from_str(&b).ok())
}
