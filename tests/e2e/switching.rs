//! The switch itself: under load nothing fails, and what started on a pool finishes there.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use tokio_tungstenite::tungstenite::Message;
use turnout_testkit::client::{get, http_client};
use turnout_testkit::{eventually, within};

use crate::BlueGreen;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_switches_under_keep_alive_load_fail_nothing() {
    switches_under_load("", 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_worker_thread_switches_under_load_too() {
    let bg = switches_under_load("workers = 1", 20).await;
    assert!(
        bg.turnout.find_log("workers=1").is_some(),
        "{}",
        bg.turnout.logs()
    );
}

/// `switches` switches, alternating, under keep-alive load from 8 clients: no request fails,
/// both pools serve, and the last switch holds.
async fn switches_under_load(extra: &str, switches: u64) -> BlueGreen {
    let bg = BlueGreen::start_with(extra).await;
    const WORKERS: usize = 8;
    const MAX_PER_WORKER: usize = 20_000;
    let stop = Arc::new(AtomicBool::new(false));

    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let url = bg.turnout.url("/");
        let stop = Arc::clone(&stop);
        workers.push(tokio::spawn(async move {
            let client = http_client();
            let (mut blue, mut green, mut failures) = (0usize, 0usize, Vec::new());
            for _ in 0..MAX_PER_WORKER {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match get(&client, &url).await {
                    Ok(a) if a.status == 200 && a.body == "blue\n" => blue += 1,
                    Ok(a) if a.status == 200 && a.body == "green\n" => green += 1,
                    Ok(a) => failures.push(format!("{} {:?}", a.status, a.body)),
                    Err(e) => failures.push(e),
                }
            }
            (blue, green, failures)
        }));
    }

    // 100 switches, alternating, while the workers run; bounded by count and by time.
    within(60, "the switches", async {
        for i in 0..switches {
            bg.switch(if i % 2 == 0 { "green" } else { "blue" }).await;
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);

    let (mut blue, mut green, mut failures) = (0, 0, Vec::new());
    for w in workers {
        let (b, g, f) = within(30, "load workers", w).await.expect("worker");
        blue += b;
        green += g;
        failures.extend(f);
    }
    assert!(
        failures.is_empty(),
        "{} failed requests, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        blue > 0 && green > 0,
        "both pools served: blue {blue}, green {green}"
    );
    let status = bg.status().await;
    assert_eq!(status["generation"], switches, "{status}");
    assert_eq!(status["active"], "blue");
    // After the last switch, a new request goes to blue.
    assert_eq!(bg.body("/").await, "blue\n");
    bg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_finishes_on_the_pool_it_started_on() {
    let bg = BlueGreen::start().await;
    let url = bg.turnout.url("/slow?ms=1500");
    let slow = tokio::spawn(async move { get(&http_client(), &url).await });
    eventually(10, "the slow request is in flight on blue", || async {
        bg.status().await["pools"]["blue"]["in_flight"] == 1
    })
    .await;
    bg.switch("green").await;
    let fresh = get(&http_client(), &bg.turnout.url("/"))
        .await
        .expect("get");
    assert_eq!(fresh.body, "green\n", "new requests go to green");
    let slow = within(10, "slow request", slow)
        .await
        .expect("task")
        .expect("slow request");
    assert_eq!((slow.status.as_u16(), slow.body.as_str()), (200, "blue\n"));
    eventually(5, "blue drains", || async {
        bg.status().await["pools"]["blue"]["in_flight"] == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_stream_finishes_whole_on_the_old_pool() {
    let bg = BlueGreen::start().await;
    let client = http_client();
    let req = http::Request::get(bg.turnout.url("/stream?chunks=8&ms=100"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let resp = client.request(req).await.expect("stream starts");
    assert_eq!(resp.headers()["x-upstream"], "blue");
    let mut body = resp.into_body();
    let first = within(5, "first chunk", body.frame())
        .await
        .expect("frame")
        .expect("ok");
    let mut text = String::from_utf8(first.into_data().expect("data").to_vec()).expect("utf8");
    bg.switch("green").await;
    assert_eq!(bg.body("/").await, "green\n");
    let rest = within(10, "rest of the stream", body.collect())
        .await
        .expect("whole stream");
    text.push_str(std::str::from_utf8(&rest.to_bytes()).expect("utf8"));
    let want: String = (0..8).map(|i| format!("blue {i}\n")).collect();
    assert_eq!(text, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_stays_on_blue_after_the_switch() {
    let bg = BlueGreen::start().await;
    let ws_url = format!("ws://{}/ws", bg.turnout.proxy);
    let (mut old, resp) = within(5, "ws connect", tokio_tungstenite::connect_async(&ws_url))
        .await
        .expect("websocket through turnout");
    assert_eq!(resp.headers()["x-upstream"], "blue");
    old.send(Message::text("a")).await.expect("send");
    assert_eq!(
        within(5, "echo", old.next())
            .await
            .expect("msg")
            .expect("ok"),
        Message::text("blue:a")
    );

    bg.switch("green").await;
    let status = bg.status().await;
    assert_eq!(status["pools"]["blue"]["tunnels"], 1, "{status}");
    old.send(Message::text("b"))
        .await
        .expect("send after switch");
    assert_eq!(
        within(5, "echo", old.next())
            .await
            .expect("msg")
            .expect("ok"),
        Message::text("blue:b")
    );

    let (mut new, _) = within(5, "ws connect", tokio_tungstenite::connect_async(&ws_url))
        .await
        .expect("second websocket");
    new.send(Message::text("c")).await.expect("send");
    assert_eq!(
        within(5, "echo", new.next())
            .await
            .expect("msg")
            .expect("ok"),
        Message::text("green:c")
    );

    // The client closes: the tunnel ends and blue has nothing open.
    old.close(None).await.expect("close");
    drop(old);
    eventually(5, "blue's tunnel closes", || async {
        bg.status().await["pools"]["blue"]["tunnels"] == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_the_active_pools_servers_moves_new_requests_only() {
    let bg = BlueGreen::start().await;
    let blue2 = turnout_testkit::upstream::TestUpstream::start("blue2").await;
    let url = bg.turnout.url("/slow?ms=1000");
    let slow = tokio::spawn(async move { get(&http_client(), &url).await });
    eventually(10, "the slow request is in flight on blue", || async {
        bg.status().await["pools"]["blue"]["in_flight"] == 1
    })
    .await;
    // Re-register blue's servers, as a deploy script does after starting a new container.
    let json = bg.put_pool("blue", &[blue2.server()]).await;
    assert_eq!(json["pools"]["blue"]["servers"][0]["addr"], blue2.server());
    assert_eq!(
        json["pools"]["blue"]["in_flight"], 1,
        "the old server's request still counts: {json}"
    );
    let a = get(&http_client(), &bg.turnout.url("/"))
        .await
        .expect("get");
    assert_eq!(a.body, "blue2\n");
    let slow = within(10, "slow request", slow)
        .await
        .expect("task")
        .expect("slow request");
    assert_eq!(
        slow.body, "blue\n",
        "the request in flight finished on the old server"
    );
    assert_eq!(bg.blue.requests(), 1);
}

/// `close_tunnels_after` on a switch: the old pool's WebSockets get a close frame 1001 (Going
/// Away) each way at the deadline, and `wait_drained` returns once they are gone; the new
/// pool's stay open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_closes_the_old_pools_websockets_with_1001_at_its_deadline() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let bg = BlueGreen::start().await;
    let ws_url = format!("ws://{}/ws", bg.turnout.proxy);
    let (mut old, _) = within(5, "ws connect", tokio_tungstenite::connect_async(&ws_url))
        .await
        .expect("websocket through turnout");
    // A message larger than one read, so frames cross reads.
    let big = "x".repeat(100_000);
    old.send(Message::text(big.clone())).await.expect("send");
    assert_eq!(
        within(5, "echo", old.next())
            .await
            .expect("msg")
            .expect("ok"),
        Message::text(format!("blue:{big}"))
    );
    let (s, j) = bg
        .post(
            "/v1/switch",
            r#"{"to":"green","close_tunnels_after":"300ms","wait_drained":"10s"}"#,
        )
        .await;
    assert_eq!(s, 200, "{j}");
    assert_eq!(
        j["drained"], true,
        "wait_drained saw the tunnel closed: {j}"
    );
    let (mut new, _) = within(5, "ws connect", tokio_tungstenite::connect_async(&ws_url))
        .await
        .expect("second websocket");

    match within(5, "the close frame", old.next()).await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a close frame 1001, got {other:?}"),
    }
    eventually(5, "the app got its close frame", || async {
        bg.blue.ws_close_code() == 1001
    })
    .await;
    assert_eq!(bg.status().await["pools"]["blue"]["tunnels"], 0);

    new.send(Message::text("still here")).await.expect("send");
    assert_eq!(
        within(5, "echo", new.next())
            .await
            .expect("msg")
            .expect("ok"),
        Message::text("green:still here")
    );
    let (s, j) = bg
        .post(
            "/v1/switch",
            r#"{"to":"blue","close_tunnels_after":"soon"}"#,
        )
        .await;
    assert_eq!(s, 400, "{j}");
    assert!(
        j["error"]
            .as_str()
            .expect("error")
            .contains("close_tunnels_after"),
        "{j}"
    );
}
