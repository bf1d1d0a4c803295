//! The metrics: valid Prometheus text that counts what was sent.

use crate::BlueGreen;
use turnout_testkit::client::{get, http_client};

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_count_what_was_sent() {
    let bg = BlueGreen::start().await;
    for _ in 0..5 {
        assert_eq!(bg.body("/").await, "blue\n");
    }
    bg.switch("green").await;
    for _ in 0..3 {
        assert_eq!(bg.body("/").await, "green\n");
    }
    let answer = get(&http_client(), &format!("{}/metrics", bg.admin_base()))
        .await
        .expect("metrics");
    assert_eq!(answer.status, 200);
    assert!(answer.headers["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/plain; version=0.0.4"));
    let lines = answer.body.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    let value = |name: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{}", answer.body))
    };
    assert_eq!(
        value(
            "turnout_requests_total",
            &[("pool", "blue"), ("class", "2xx")]
        ),
        5.0
    );
    assert_eq!(
        value(
            "turnout_requests_total",
            &[("pool", "green"), ("class", "2xx")]
        ),
        3.0
    );
    assert_eq!(value("turnout_switches_total", &[]), 1.0);
    assert_eq!(value("turnout_rollbacks_total", &[]), 0.0);
    assert_eq!(value("turnout_active_pool", &[("pool", "green")]), 1.0);
    assert_eq!(value("turnout_active_pool", &[("pool", "blue")]), 0.0);
    assert_eq!(
        value("turnout_in_flight_requests", &[("pool", "blue")]),
        0.0
    );
    assert_eq!(
        value(
            "turnout_upstream_healthy",
            &[("pool", "green"), ("server", &bg.green.server())]
        ),
        1.0
    );
    assert_eq!(value("turnout_generation", &[]), 1.0);
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "turnout_request_duration_seconds_count"
                && s.labels.get("pool") == Some("blue")),
        "histogram by pool"
    );
}
