//! Passive health: a server killed under load, failing requests ejecting a server and retried
//! on another, and which requests may be retried at all.

use crate::BIN;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use turnout_testkit::client::{get, http_client};
use turnout_testkit::process::Sandbox;
use turnout_testkit::upstream::TestUpstream;
use turnout_testkit::{eventually, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_killed_under_load_costs_no_request() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let sandbox = Sandbox::new(BIN);
    sandbox.write_config(&sandbox.config(&[("blue", &[a.server(), b.server()])], "blue", ""));
    let turnout = sandbox.start().await.unwrap_or_else(|e| panic!("{e}"));

    const WORKERS: usize = 6;
    const MAX_PER_WORKER: usize = 20_000;
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (url, stop) = (turnout.url("/"), Arc::clone(&stop));
        workers.push(tokio::spawn(async move {
            let client = http_client();
            let (mut ok, mut failures) = (0usize, Vec::new());
            for i in 0..MAX_PER_WORKER {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                // Each request is bounded and named, so one that hangs fails the test with its
                // URL (one did, about once in 400 runs, while hyper-util's own retry could resend
                // an unsent request on another pooled connection to the killed server).
                let url = format!("{url}?w={w}&i={i}");
                match tokio::time::timeout(std::time::Duration::from_secs(10), get(&client, &url))
                    .await
                {
                    Ok(Ok(r)) if r.status == 200 && (r.body == "a\n" || r.body == "b\n") => ok += 1,
                    Ok(Ok(r)) => failures.push(format!("{} {:?}", r.status, r.body)),
                    Ok(Err(e)) => failures.push(e),
                    Err(_) => failures.push(format!("{url}: no answer within 10s")),
                }
            }
            (ok, failures)
        }));
    }
    eventually(10, "both servers take load", || async {
        a.requests() > 50 && b.requests() > 50
    })
    .await;
    a.kill();
    let b_before = b.requests();
    eventually(10, "load goes on on b", || async {
        b.requests() > b_before + 200
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failures) = (0, Vec::new());
    for w in workers {
        let (o, f) = within(30, "workers", w).await.expect("worker");
        ok += o;
        failures.extend(f);
    }
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}\nturnout's log, but for 200s:\n{}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(5)],
        turnout
            .logs()
            .lines()
            .filter(|l| !l.contains("status=200"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Ejections end by themselves after a while; the active checks then keep the dead server
    // out for good, within a couple of check intervals.
    eventually(15, "the killed server shows unhealthy", || async {
        let j = turnout.status().await;
        j["pools"]["blue"]["servers"]
            .as_array()
            .expect("servers")
            .iter()
            .any(|s| s["addr"] == a.server() && s["healthy"] == false)
    })
    .await;
}

/// A pool of a live server and `dead` (nothing listens there), with the given extra config.
async fn two_servers(
    second: &str,
    extra: &str,
) -> (TestUpstream, Sandbox, turnout_testkit::process::Turnout) {
    let a = TestUpstream::start("a").await;
    let sandbox = Sandbox::new(BIN);
    let text = sandbox.config(&[("blue", &[a.server(), second.to_owned()])], "blue", extra);
    sandbox.write_config(&text);
    let turnout = sandbox.start().await.unwrap_or_else(|e| panic!("{e}"));
    (a, sandbox, turnout)
}

#[tokio::test]
async fn failing_requests_eject_a_server_and_are_retried_elsewhere() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    // Active checks off: only the passive ones can find the dead server.
    let (a, _sandbox, turnout) = two_servers(
        &dead.to_string(),
        "\n[health]\nenabled = false\n[health.passive]\nfailures = 3\n",
    )
    .await;
    let client = http_client();
    for i in 0..20 {
        let answer = get(&client, &turnout.url("/")).await.expect("answer");
        assert_eq!(
            (answer.status.as_u16(), answer.body.as_str()),
            (200, "a\n"),
            "request {i}"
        );
    }
    assert_eq!(a.requests(), 20);
    let j = turnout.status().await;
    let server = j["pools"]["blue"]["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .find(|s| s["addr"] == dead.to_string())
        .expect("listed")
        .clone();
    assert_eq!(
        (server["ejected"].as_bool(), server["healthy"].as_bool()),
        (Some(true), Some(false)),
        "{j}"
    );
    let metrics = turnout.metrics().await;
    assert!(
        metrics.contains(&format!(
            "turnout_ejections_total{{pool=\"blue\",server=\"{dead}\"}} 1"
        )),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("turnout_retries_total{pool=\"blue\"}") && !l.ends_with(" 0")),
        "{metrics}"
    );
    // The log is written by a buffered writer: the line may follow the counter by a moment.
    eventually(10, "the ejection logged", || async {
        turnout.find_log("server ejected").is_some()
    })
    .await;
}

#[tokio::test]
async fn only_idempotent_requests_are_retried_after_a_reset() {
    let b = TestUpstream::start("b").await;
    let (a, _sandbox, turnout) =
        two_servers(&b.server(), "\n[health.passive]\nenabled = false\n").await;
    let client = http_client();
    // "a" resets every /flaky?on=a; a GET that lands there is retried on "b".
    for i in 0..6 {
        let answer = get(&client, &turnout.url("/flaky?on=a"))
            .await
            .expect("answer");
        assert_eq!(
            (answer.status.as_u16(), answer.body.as_str()),
            (200, "b\n"),
            "GET {i}"
        );
    }
    // A POST is not idempotent: when it lands on "a" it fails with 502, never resent.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let req = http::Request::post(turnout.url("/flaky?on=a"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request");
        statuses.push(
            turnout_testkit::client::send(&client, req)
                .await
                .expect("answer")
                .status
                .as_u16(),
        );
    }
    assert!(
        statuses.contains(&502) && statuses.contains(&200),
        "round-robin sends some to each: {statuses:?}"
    );
    assert!(
        a.requests() >= 3 + 3,
        "a saw the GETs and the POSTs that failed there"
    );
}
