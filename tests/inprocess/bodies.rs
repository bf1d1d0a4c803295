//! The body rules of `body.rs` and `deadlines.rs`, timed in paused time: a request body that
//! stops coming is given up on at `client_body_timeout`, a response body the app stops sending
//! is cut at `upstream.body_timeout`, and a body that keeps coming is never cut, however long.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use turnout_testkit::within;

use crate::harness::Running;

/// Reads until the connection ends (or 60 s of the clock pass): what came, and when it ended.
async fn read_to_end(conn: &mut tokio::net::TcpStream) -> (String, Instant) {
    let mut got = Vec::new();
    let _ = within(60, "the connection ends", conn.read_to_end(&mut got)).await;
    (String::from_utf8_lossy(&got).into_owned(), Instant::now())
}

/// `GET /metrics` on the admin port.
async fn metrics(t: &Running) -> String {
    let answer = turnout_testkit::client::get(
        &turnout_testkit::client::http_client(),
        &format!("{}/metrics", t.admin_base()),
    )
    .await
    .expect("metrics");
    answer.body
}

#[tokio::test(start_paused = true)]
async fn a_request_body_that_stops_is_given_up_on_at_the_client_body_timeout() {
    let t = Running::start("client_body_timeout = \"1s\"").await;
    let mut conn = tokio::net::TcpStream::connect(t.bound.proxy)
        .await
        .expect("connect");
    conn.write_all(b"POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: 100\r\n\r\nten bytes!")
        .await
        .expect("write");
    let sent = Instant::now();
    let (_, ended) = read_to_end(&mut conn).await;
    let waited = ended - sent;
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_millis(1100),
        "given up on after {waited:?}"
    );
    let m = metrics(&t).await;
    assert!(
        m.contains("turnout_client_cutoffs_total{reason=\"body_timeout\"} 1"),
        "{m}"
    );
    // Not the server's fault: blue stays healthy and was not ejected.
    let status = t.status().await;
    assert_eq!(
        status["pools"]["blue"]["servers"][0]["ejected"], false,
        "{status}"
    );
    t.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_response_body_that_stalls_is_cut_at_the_upstream_body_timeout_and_one_that_flows_is_not()
{
    let t = Running::start("\n[upstream]\nbody_timeout = \"1s\"\n").await;
    // One chunk, then nothing for 3 s: cut 1 s after the last byte.
    let mut conn = tokio::net::TcpStream::connect(t.bound.proxy)
        .await
        .expect("connect");
    conn.write_all(
        b"GET /stream?chunks=3&ms=3000 HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    let asked = Instant::now();
    let (answer, ended) = read_to_end(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("blue 0"), "{answer}");
    assert!(
        !answer.contains("blue 1"),
        "cut before the second chunk: {answer}"
    );
    assert!(
        !answer.ends_with("0\r\n\r\n"),
        "no clean end of a chunked body: {answer}"
    );
    let took = ended - asked;
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1100),
        "cut after {took:?}"
    );

    // Ten chunks 900 ms apart: 9 s in all, never 1 s without a byte, never cut.
    let mut conn = tokio::net::TcpStream::connect(t.bound.proxy)
        .await
        .expect("connect");
    conn.write_all(
        b"GET /stream?chunks=10&ms=900 HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    let (answer, _) = read_to_end(&mut conn).await;
    assert!(answer.contains("blue 9\n"), "{answer}");
    assert!(answer.ends_with("0\r\n\r\n"), "a clean end: {answer}");
    t.stop().await;
}
