//! `turnout switch --wait-drained` (the CLI's call, `turnout::client::switch_call`) against a
//! wait longer than the CLI's own 30-second admin timeout, in paused time: the call lasts the
//! wait, says meanwhile what the old pool still holds, and gets the server's answer.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;
use turnout::client::{switch_call, AdminArgs, Outcome, SwitchArgs, ADMIN_TIMEOUT};

use crate::harness::{Running, FAST_CHECKS};

/// A WebSocket open on the active pool, read until it ends; the task ends with it.
async fn open_websocket(t: &Running) -> tokio::task::JoinHandle<()> {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", t.bound.proxy))
        .await
        .expect("a WebSocket through turnout");
    tokio::spawn(async move {
        let mut ws = ws;
        while let Some(Ok(_)) = ws.next().await {}
    })
}

fn args(t: &Running) -> AdminArgs {
    AdminArgs {
        admin: t.admin_base(),
        token: None,
    }
}

#[tokio::test(start_paused = true)]
async fn a_switch_waits_past_the_admin_timeout_for_the_drain_and_says_what_it_waits_for() {
    let t = Running::start(FAST_CHECKS).await;
    t.wait_healthy("green").await;
    let reader = open_websocket(&t).await;
    let options = SwitchArgs {
        force: false,
        wait_drained: Some("40s".into()),
        close_tunnels_after: Some("31s".into()),
    };
    let started = Instant::now();
    let mut lines = Vec::new();
    let outcome = switch_call(&args(&t), Some("green"), &options, false, |line| {
        lines.push(line.to_owned())
    })
    .await;
    let waited = started.elapsed();
    let Outcome::Ok(answer) = outcome else {
        panic!("the switch answered: {outcome:?}");
    };
    assert_eq!(answer["drained"], true, "{answer}");
    assert_eq!(answer["active"], "green", "{answer}");
    // The tunnel was closed at 31 s, past the CLI's own bound, and the call saw it through.
    assert!(
        waited >= Duration::from_secs(31) && waited > ADMIN_TIMEOUT,
        "{waited:?}"
    );
    assert!(waited < Duration::from_secs(40), "{waited:?}");
    // A line every 10 s off a terminal: at 10, 20 and 30 s.
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("waiting for blue to drain: ")
                && l.contains("1 WebSocket(s) in flight")),
        "{lines:?}"
    );
    assert!(lines[2].contains("(30s of 40s)"), "{lines:?}");
    tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("the WebSocket ended at the close")
        .expect("the reader ends without a panic");
    assert_eq!(t.blue.ws_close_code(), 1001, "Going Away, to the app too");
    t.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_drain_that_outlasts_the_wait_is_answered_not_drained_after_the_whole_wait() {
    let t = Running::start(FAST_CHECKS).await;
    t.wait_healthy("green").await;
    let reader = open_websocket(&t).await;
    let options = SwitchArgs {
        force: false,
        wait_drained: Some("45s".into()),
        close_tunnels_after: None,
    };
    let started = Instant::now();
    let outcome = switch_call(&args(&t), Some("green"), &options, true, |_| {}).await;
    let waited = started.elapsed();
    let Outcome::Ok(answer) = outcome else {
        panic!("the switch answered: {outcome:?}");
    };
    assert_eq!(answer["drained"], false, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("blue")),
        "{answer}"
    );
    assert!(waited >= Duration::from_secs(45), "{waited:?}");
    reader.abort();
    t.stop().await;
}
