//! End-to-end tests: the real `turnout` binary against real HTTP and WebSocket upstreams, all
//! on 127.0.0.1 with ephemeral ports; every wait and every load loop is bounded.
//!
//! - `dashboard`: the page on the admin port in headless Chromium, and the API that feeds it.
//! - `switching`: the blue/green switch under load, and what stays on the old pool.
//! - `forwarding`: headers, bodies, HTTP/2, balancing, upstream failures.
//! - `grpc`: `h2c` pools in front of a real gRPC server, trailers and statuses intact.
//! - `guards`: request ids, the body limit, maintenance mode, pause and hold.
//! - `hardening`: what one client must not do to others, the app servers or the admin API.
//! - `health`: active checks, the health gate, the load balancer's endpoint, draining.
//! - `passive`: a server killed under load, ejection, retries.
//! - `limits`: slow and oversized request heads.
//! - `front_door`: `[[auth]]`, `[compression]` and `[limits]` met by curl and Python.
//! - `metrics`: the Prometheus text and what it counts.
//! - `lifecycle`: config and state files, restarts, signals, the admin API and CLI over HTTP.
//! - `defects`: the defects found by outside testing and a new user (issue 25), one test each.
//! - `deploy_kit`: docker/deploy.sh, switch.sh and rollback.sh end to end, no Docker needed.
//! - `fleet`: `turnout fleet` over three instances: all switch, or none.
//! - `two_phase`: prepare, commit and abort, the per-instance half of a fleet switch.
//! - `caching`: static files and the asset cache.
//! - `rollout`: guarded rollouts judged on turnout's own counters, rolled back by turnout.
//! - `shipping`: JSON logs, reload on SIGHUP, `turnout deploy` (issue 30).
//! - `splitting`: weighted splits, sticky clients, preview, A/B rules, balancers in a pool.
//! - `tls`: the HTTPS listener (SNI, ALPN, renewal, bounds) and `https://` upstreams.
//! - `upgrade`: turnout upgrading itself in place under load, with tunnels open, and failing.

#[path = "e2e/caching.rs"]
mod caching;
#[path = "e2e/dashboard.rs"]
mod dashboard;
#[path = "e2e/defects.rs"]
mod defects;
#[path = "e2e/deploy_kit.rs"]
mod deploy_kit;
#[path = "e2e/fleet.rs"]
mod fleet;
#[path = "e2e/fleet_etcd.rs"]
mod fleet_etcd;
#[path = "e2e/forwarding.rs"]
mod forwarding;
#[path = "e2e/front_door.rs"]
mod front_door;
#[path = "e2e/grpc.rs"]
mod grpc;
#[path = "e2e/guards.rs"]
mod guards;
#[path = "e2e/hardening.rs"]
mod hardening;
#[path = "e2e/health.rs"]
mod health;
#[path = "e2e/lifecycle.rs"]
mod lifecycle;
#[path = "e2e/limits.rs"]
mod limits;
#[path = "e2e/metrics.rs"]
mod metrics;
#[path = "e2e/passive.rs"]
mod passive;
#[path = "e2e/rollout.rs"]
mod rollout;
#[path = "e2e/shipping.rs"]
mod shipping;
#[path = "e2e/splitting.rs"]
mod splitting;
#[path = "e2e/switching.rs"]
mod switching;
#[path = "e2e/tls.rs"]
mod tls;
#[path = "e2e/two_phase.rs"]
mod two_phase;
#[path = "e2e/upgrade.rs"]
mod upgrade;

use turnout_testkit::process::{Sandbox, Turnout};
use turnout_testkit::upstream::TestUpstream;

pub const BIN: &str = env!("CARGO_BIN_EXE_turnout");

/// Config lines for checks of `/health` every 100 ms that flip after one result, so tests wait
/// little (the test upstream's `/health` follows `set_healthy`).
pub const FAST_CHECKS: &str = "\n[health]\npath = \"/health\"\ninterval = \"100ms\"\ntimeout = \"500ms\"\nhealthy_threshold = 1\nunhealthy_threshold = 1\n";

/// Blue and green upstreams, and turnout in front with blue active.
#[derive(Debug)]
pub struct BlueGreen {
    pub blue: TestUpstream,
    pub green: TestUpstream,
    pub sandbox: Sandbox,
    pub turnout: Turnout,
}

impl BlueGreen {
    pub async fn start() -> BlueGreen {
        Self::start_with("").await
    }

    /// With extra lines for the config (they land in `[server]`, and may open later tables).
    pub async fn start_with(extra: &str) -> BlueGreen {
        Self::start_full(extra, "").await
    }

    /// With extra lines for `[server]` and for `[routing]` (which comes last in the file).
    pub async fn start_full(extra_server: &str, extra_routing: &str) -> BlueGreen {
        let blue = TestUpstream::start("blue").await;
        let green = TestUpstream::start("green").await;
        let sandbox = Sandbox::new(BIN);
        let config = sandbox.config(
            &[("blue", &[blue.server()]), ("green", &[green.server()])],
            "blue",
            extra_server,
        ) + extra_routing;
        sandbox.write_config(&config);
        let turnout = sandbox.start().await.unwrap_or_else(|e| panic!("{e}"));
        BlueGreen {
            blue,
            green,
            sandbox,
            turnout,
        }
    }

    /// Waits (at most 10 s) until `pool`'s servers all show healthy in the status.
    pub async fn wait_healthy(&self, pool: &str) {
        turnout_testkit::eventually(10, &format!("{pool} healthy"), || async {
            let j = self.status().await;
            j["pools"][pool]["servers"]
                .as_array()
                .is_some_and(|a| a.iter().all(|s| s["healthy"] == true))
        })
        .await;
    }

    pub fn admin_base(&self) -> String {
        format!("http://{}", self.turnout.admin)
    }

    /// `POST path` on the admin API with a JSON `body`: the status and the JSON answer.
    pub async fn post(&self, path: &str, body: &str) -> (u16, serde_json::Value) {
        let (status, json) = turnout_testkit::client::admin(
            &self.admin_base(),
            http::Method::POST,
            path,
            Some(body),
            None,
        )
        .await;
        (status.as_u16(), json)
    }

    /// Switches through the admin API and checks the answer.
    pub async fn switch(&self, to: &str) {
        let (status, json) = self
            .post("/v1/switch", &format!("{{\"to\":\"{to}\"}}"))
            .await;
        assert_eq!(status, 200, "switch to {to}: {json}");
        assert_eq!(json["active"], to, "{json}");
    }

    /// `PUT /v1/pools/{name}` with `servers`; checks the 200 and returns the new status.
    pub async fn put_pool(&self, name: &str, servers: &[String]) -> serde_json::Value {
        let body = serde_json::json!({ "servers": servers }).to_string();
        let (status, json) = turnout_testkit::client::admin(
            &self.admin_base(),
            http::Method::PUT,
            &format!("/v1/pools/{name}"),
            Some(&body),
            None,
        )
        .await;
        assert_eq!(status, 200, "PUT /v1/pools/{name}: {json}");
        json
    }

    /// GETs `path` through turnout on a new connection and returns the body.
    pub async fn body(&self, path: &str) -> String {
        let client = turnout_testkit::client::http_client();
        match turnout_testkit::client::get(&client, &self.turnout.url(path)).await {
            Ok(answer) => answer.body,
            Err(e) => panic!(
                "GET {path} through turnout failed: {e}\n{}",
                self.turnout.logs()
            ),
        }
    }

    pub async fn status(&self) -> serde_json::Value {
        self.turnout.status().await
    }
}
