//! Client connection limits: slow heads and oversized heads (the idle keep-alive timeout is
//! tested in paused time, tests/inprocess/timers.rs).

use crate::BlueGreen;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turnout_testkit::{eventually, within};

#[tokio::test]
async fn slowloris_clients_are_cut_off_and_oversized_heads_get_431() {
    let bg =
        BlueGreen::start_with("client_header_timeout = \"300ms\"\nmax_header_count = 20").await;
    let mut slow = tokio::net::TcpStream::connect(bg.turnout.proxy)
        .await
        .expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
        .await
        .expect("write");
    let mut rest = Vec::new();
    let read = within(10, "the connection is closed", slow.read_to_end(&mut rest)).await;
    let read = read.map_err(|e| e.to_string());
    assert!(
        read.as_ref().is_ok_and(|n| *n == 0) || rest.is_empty(),
        "got {:?}",
        String::from_utf8_lossy(&rest)
    );
    // Bounded, and on failure shows what turnout did log. The needle is `status=408`, not a bare
    // `408`: a timestamp such as `03.194080Z` holds that too (a CI run once matched it).
    let logged = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !bg
            .turnout
            .find_log("status=408")
            .is_some_and(|l| l.contains("request head"))
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        logged.is_ok(),
        "no 408 line within 10 s; read: {read:?}; turnout logged:\n{}",
        bg.turnout.logs()
    );

    let mut big = tokio::net::TcpStream::connect(bg.turnout.proxy)
        .await
        .expect("connect");
    let mut head = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..30 {
        head.push_str(&format!("X-H{i}: {i}\r\n"));
    }
    head.push_str("\r\n");
    big.write_all(head.as_bytes()).await.expect("write");
    let mut answer = String::new();
    within(10, "the 431", big.read_to_string(&mut answer))
        .await
        .expect("read");
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    eventually(5, "the 431 is logged", || async {
        bg.turnout.find_log("status=431").is_some()
    })
    .await;

    let mut bad = tokio::net::TcpStream::connect(bg.turnout.proxy)
        .await
        .expect("connect");
    bad.write_all(b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    within(10, "the 400", bad.read_to_string(&mut answer))
        .await
        .expect("read");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    eventually(5, "the 400 is logged", || async {
        bg.turnout.find_log("status=400").is_some()
    })
    .await;
    assert_eq!(bg.blue.requests(), 0);
}
