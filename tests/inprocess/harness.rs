//! The whole of turnout in the test's own runtime: [`Running::start`] binds its listeners on
//! 127.0.0.1:0, starts blue and green test upstreams beside it, and serves through
//! `turnout::run` until [`Running::stop`]. Nothing is spawned as a process, so a test may run
//! in paused time (`#[tokio::test(start_paused = true)]`): every timer, turnout's and the
//! test's, jumps forward whenever all of them wait, and the sockets stay real.

use std::path::Path;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use turnout::{Bound, Listeners, StartError};
use turnout_config::Config;
use turnout_proxy::Drained;
use turnout_testkit::upstream::TestUpstream;

/// Checks of `/health` every 100 ms that flip after one result.
pub const FAST_CHECKS: &str = "\n[health]\npath = \"/health\"\ninterval = \"100ms\"\ntimeout = \"500ms\"\nhealthy_threshold = 1\nunhealthy_threshold = 1\n";

/// turnout serving in this runtime, with blue active, in front of two test upstreams.
#[derive(Debug)]
pub struct Running {
    pub bound: Bound,
    pub blue: TestUpstream,
    pub green: TestUpstream,
    stop: CancellationToken,
    task: JoinHandle<Result<Drained, StartError>>,
    /// The state file's directory.
    _dir: tempfile::TempDir,
}

impl Running {
    /// With `extra` lines at the end of `[server]` (they may open later tables).
    pub async fn start(extra: &str) -> Running {
        Running::start_with(extra, &[]).await
    }

    /// As [`Running::start`], with `more` servers in blue beside the blue test upstream (an
    /// address nothing listens on, say).
    pub async fn start_with(extra: &str, more: &[String]) -> Running {
        Running::start_full(extra, more, "").await
    }

    /// As [`Running::start`], with `routing` lines in `[routing]` (after `active`).
    pub async fn start_routing(extra: &str, routing: &str) -> Running {
        Running::start_full(extra, &[], routing).await
    }

    async fn start_full(extra: &str, more: &[String], routing: &str) -> Running {
        let blue = TestUpstream::start("blue").await;
        let green = TestUpstream::start("green").await;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut blues = vec![blue.server()];
        blues.extend(more.iter().cloned());
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nshutdown_delay = \"0s\"\n{extra}\n\n\
             [state]\nfile = {:?}\n\n\
             [pools.blue]\nservers = {blues:?}\n\n[pools.green]\nservers = [\"{}\"]\n\n\
             [routing]\nactive = \"blue\"\n{routing}\n",
            dir.path().join("state.json").display().to_string(),
            green.server(),
        );
        let config = Config::parse(&text, Path::new("<in-process test>"))
            .unwrap_or_else(|e| panic!("the test's config: {e}\n{text}"));
        let listeners = Listeners::bind(&config).await.expect("bind 127.0.0.1:0");
        let bound = listeners.bound();
        let stop = CancellationToken::new();
        let shutdown = stop.clone().cancelled_owned();
        let task = tokio::spawn(turnout::run(config, listeners, shutdown));
        Running {
            bound,
            blue,
            green,
            stop,
            task,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.bound.proxy)
    }

    pub fn admin_base(&self) -> String {
        format!("http://{}", self.bound.admin)
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> serde_json::Value {
        let (status, json) = turnout_testkit::client::admin(
            &self.admin_base(),
            http::Method::GET,
            "/v1/status",
            None,
            None,
        )
        .await;
        assert_eq!(status, 200, "{json}");
        json
    }

    /// `POST /v1/switch` to `pool`, which must succeed.
    pub async fn switch(&self, pool: &str) {
        let (status, json) = turnout_testkit::client::admin(
            &self.admin_base(),
            http::Method::POST,
            "/v1/switch",
            Some(&format!(r#"{{"to":"{pool}"}}"#)),
            None,
        )
        .await;
        assert_eq!(status, 200, "{json}");
    }

    /// GET `path` through the proxy with these headers: the whole answer.
    pub async fn get(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> turnout_testkit::client::Answer {
        let mut req = http::Request::get(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("a request");
        turnout_testkit::client::send(&turnout_testkit::client::http_client(), req)
            .await
            .expect("an answer")
    }

    /// Waits until every server of `pool` shows healthy (at most 10 s of this runtime's time).
    pub async fn wait_healthy(&self, pool: &str) {
        turnout_testkit::eventually(10, &format!("{pool} healthy"), || async {
            let status = self.status().await;
            let servers = status["pools"][pool]["servers"].as_array().cloned();
            servers.is_some_and(|s| s.iter().all(|s| s["healthy"] == true))
        })
        .await;
    }

    /// Shuts down (as a signal would) and waits for the drain's report.
    pub async fn stop(self) -> Drained {
        self.stop.cancel();
        self.task
            .await
            .expect("turnout's task ends without a panic")
            .expect("turnout started")
    }
}
