//! turnout's timing rules in paused time, each to the millisecond of the runtime's clock: the
//! client idle timeout against the header timeout, the upstream connections' idle timer and
//! bound, `hold_when_unavailable` across an app restart, and the passive ejections' backoff.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use turnout_testkit::client::{get, http_client};
use turnout_testkit::upstream::TestUpstream;
use turnout_testkit::within;

use crate::harness::{Running, FAST_CHECKS};

#[tokio::test(start_paused = true)]
async fn idle_keep_alive_outlives_the_header_timeout_but_not_the_idle_timeout() {
    let t =
        Running::start("client_header_timeout = \"300ms\"\nclient_idle_timeout = \"1500ms\"").await;
    let mut conn = tokio::net::TcpStream::connect(t.bound.proxy)
        .await
        .expect("connect");
    let mut buf = vec![0u8; 4096];
    for round in 0..2 {
        conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let n = within(5, "an answer", conn.read(&mut buf))
            .await
            .expect("read");
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(
            text.starts_with("HTTP/1.1 200") && text.ends_with("blue\n"),
            "round {round}: {text}"
        );
        // Idle for longer than the header timeout, shorter than the idle timeout.
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    // Idle on: turnout closes the connection 1500 ms after the last answer, not before.
    let n = within(10, "the idle close", conn.read(&mut buf))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf[..n]));

    // The same, timed: a fresh connection idle after one answer is closed at 1500 ms.
    let mut conn = tokio::net::TcpStream::connect(t.bound.proxy)
        .await
        .expect("connect");
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let n = conn.read(&mut buf).await.expect("read");
    assert!(n > 0);
    let answered = Instant::now();
    let n = within(10, "the idle close", conn.read(&mut buf))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0);
    let idle = answered.elapsed();
    assert!(
        idle >= Duration::from_millis(1500) && idle < Duration::from_millis(1600),
        "closed after {idle:?} idle"
    );

    // A response that streams for longer than the idle timeout is not cut.
    let a = get(&http_client(), &t.url("/stream?chunks=4&ms=700"))
        .await
        .expect("stream");
    assert_eq!(a.body, "blue 0\nblue 1\nblue 2\nblue 3\n");

    // Nor is a WebSocket that stays quiet for longer.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", t.bound.proxy))
        .await
        .expect("websocket");
    tokio::time::sleep(Duration::from_secs(20)).await;
    ws.send(Message::text("late")).await.expect("send");
    let echo = within(5, "echo", ws.next())
        .await
        .expect("message")
        .expect("ok");
    assert_eq!(echo, Message::text("blue:late"));
    drop(ws);
    t.stop().await;
}

/// Requests one after another share one upstream connection; one left idle is closed at
/// `upstream.idle_timeout`; after a burst no more than `max_idle_per_server` stay idle.
#[tokio::test(start_paused = true)]
async fn upstream_connections_are_reused_bounded_and_closed_at_the_idle_timeout() {
    let t = Running::start("[upstream]\nidle_timeout = \"1s\"\nmax_idle_per_server = 2\n").await;
    let client = http_client();
    for _ in 0..20 {
        let a = get(&client, &t.url("/")).await.expect("answer");
        assert_eq!(a.status, 200, "{}", a.body);
    }
    assert_eq!(t.blue.requests(), 20);
    assert_eq!(
        t.blue.app_connections(),
        1,
        "twenty requests one after another share one upstream connection"
    );
    // Open until the idle timeout, closed just after it.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(t.blue.open_app_connections(), 1, "still idle within 1s");
    wait_for(Duration::from_millis(300), || {
        t.blue.open_app_connections() == 0
    })
    .await;

    // Five at once need five connections; two of them stay idle afterwards, then none.
    let slow: Vec<_> = (0..5)
        .map(|_| {
            let url = t.url("/slow?ms=300");
            tokio::spawn(async move { get(&http_client(), &url).await })
        })
        .collect();
    for task in slow {
        let a = task.await.expect("task").expect("answer");
        assert_eq!(a.status, 200, "{}", a.body);
    }
    assert_eq!(t.blue.app_connections(), 1 + 5);
    wait_for(Duration::from_millis(100), || {
        t.blue.open_app_connections() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(t.blue.open_app_connections(), 2, "the two kept, within 1s");
    wait_for(Duration::from_millis(300), || {
        t.blue.open_app_connections() == 0
    })
    .await;
    drop(client);
    t.stop().await;
}

/// `hold_when_unavailable`: while blue restarts (its port refusing connections for a second of
/// the clock), requests wait for it instead of failing, and are answered once it is back.
#[tokio::test(start_paused = true)]
async fn an_app_restart_under_hold_when_unavailable_holds_requests_until_it_is_back() {
    let t = Running::start(&format!(
        "\n[upstream]\nhold_when_unavailable = \"5s\"\n{FAST_CHECKS}"
    ))
    .await;
    t.wait_healthy("blue").await;
    let addr = t.blue.addr;
    t.blue.kill();
    let killed = Instant::now();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let url = t.url("/");
            tokio::spawn(async move {
                let a = get(&http_client(), &url).await.expect("an answer");
                (a.status.as_u16(), Instant::now())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let restarted = TestUpstream::start_at("blue", addr).await;
    for c in clients {
        let (status, at) = c.await.expect("client");
        assert_eq!(status, 200, "held, then answered by the restarted blue");
        let held = at - killed;
        assert!(
            held >= Duration::from_secs(1) && held < Duration::from_secs(5),
            "held {held:?}"
        );
    }
    assert_eq!(restarted.requests(), 4);

    // An app that is not back within the hold: 502 at the hold's end, not before.
    restarted.kill();
    let asked = Instant::now();
    let a = get(&http_client(), &t.url("/")).await.expect("an answer");
    assert!(a.status.is_server_error(), "{}", a.status);
    let held = asked.elapsed();
    assert!(
        held >= Duration::from_secs(5) && held < Duration::from_secs(6),
        "held {held:?}"
    );
    t.stop().await;
}

/// Polls `done` every 10 ms of the clock for at most `limit`.
async fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < until, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Passive health: a server that fails `failures` requests in a row is ejected for
/// `ejection`, twice that the next time, capped at `max_ejection`; each ejection ends at its
/// length to the millisecond (active checks off, so only the timer ends it).
#[tokio::test(start_paused = true)]
async fn ejections_end_at_their_length_which_doubles_up_to_the_cap() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .to_string();
    let t = Running::start_with(
        "\n[health]\nenabled = false\n[health.passive]\nfailures = 3\nejection = \"5s\"\nmax_ejection = \"12s\"\n",
        std::slice::from_ref(&dead),
    )
    .await;
    let client = http_client();
    for expected in [5, 10, 12] {
        // Requests until the dead server is ejected: every one answered by the live one.
        let mut sent = 0;
        while !ejected(&t, &dead).await {
            let a = get(&client, &t.url("/")).await.expect("answer");
            assert_eq!(a.status, 200, "retried on the live server");
            sent += 1;
            assert!(sent < 50, "ejected within 50 requests");
        }
        let at = Instant::now();
        tokio::time::sleep(Duration::from_secs(expected) - Duration::from_millis(10)).await;
        assert!(ejected(&t, &dead).await, "still ejected before {expected}s");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !ejected(&t, &dead).await,
            "back after {expected}s ({:?})",
            at.elapsed()
        );
    }
    drop(client);
    t.stop().await;
}

/// Whether `server` of blue is ejected, as the status says.
async fn ejected(t: &Running, server: &str) -> bool {
    let status = t.status().await;
    let servers = status["pools"]["blue"]["servers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    servers
        .iter()
        .find(|s| s["addr"] == server)
        .unwrap_or_else(|| panic!("{server} listed: {status}"))["ejected"]
        == true
}
