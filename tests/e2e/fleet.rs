//! `turnout fleet`: three real instances on loopback flip together or not at all.

use std::process::Output;

use crate::{BlueGreen, FAST_CHECKS};

async fn three() -> Vec<BlueGreen> {
    let mut fleet = Vec::new();
    for _ in 0..3 {
        fleet.push(BlueGreen::start_with(FAST_CHECKS).await);
    }
    fleet
}

/// `turnout fleet ARGS... --instance URL...` for every instance of `fleet`.
fn fleet_command(fleet: &[BlueGreen], args: &[&str]) -> std::process::Command {
    let mut cmd = fleet[0].sandbox.command(&["fleet"]);
    cmd.args(args);
    for bg in fleet {
        cmd.arg("--instance").arg(bg.admin_base());
    }
    cmd
}

/// Runs `turnout fleet ARGS... --instance URL...` to its end, off the test's runtime.
async fn fleet_cmd(fleet: &[BlueGreen], args: &[&str]) -> (Output, String, String) {
    let mut cmd = fleet_command(fleet, args);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run turnout fleet"))
        .await
        .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

async fn bodies(fleet: &[BlueGreen]) -> Vec<String> {
    let mut v = Vec::new();
    for bg in fleet {
        v.push(bg.body("/").await);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_switch_flips_every_instance_and_rollback_brings_all_back() {
    let fleet = three().await;
    let (out, stdout, stderr) = fleet_cmd(&fleet, &["switch", "--to", "green"]).await;
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(stdout.matches("switched").count(), 3, "{stdout}");
    assert!(stdout.contains("skew: "), "{stdout}");
    assert_eq!(bodies(&fleet).await, ["green\n"; 3]);
    // The new version marks its clients, so that no instance still between prepare and
    // commit would send them back to the old one.
    let answer = turnout_testkit::client::get(
        &turnout_testkit::client::http_client(),
        &fleet[2].turnout.url("/"),
    )
    .await
    .expect("answer");
    let cookie = answer
        .headers
        .get(http::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(cookie.starts_with("turnout-mark=f"), "{cookie:?}");

    let (out, stdout, stderr) = fleet_cmd(&fleet, &["status"]).await;
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let actives: Vec<&str> = stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(actives, ["green"; 3], "{stdout}");

    let (out, stdout, stderr) = fleet_cmd(&fleet, &["rollback"]).await;
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(bodies(&fleet).await, ["blue\n"; 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_unhealthy_instance_means_no_instance_switches() {
    let fleet = three().await;
    fleet[1].green.set_healthy(false);
    let (out, stdout, stderr) = fleet_cmd(&fleet, &["switch", "--to", "green"]).await;
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let bad = stdout
        .lines()
        .find(|l| l.starts_with(&fleet[1].admin_base()))
        .expect("a row for the unhealthy instance");
    assert!(
        bad.contains("refused (409)") && bad.contains(&fleet[1].green.server()),
        "names the instance and its failing server: {bad}"
    );
    assert_eq!(stdout.matches("ready, aborted").count(), 2, "{stdout}");
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    assert_eq!(bodies(&fleet).await, ["blue\n"; 3]);

    // The aborts freed every instance for the next attempt.
    fleet[1].green.set_healthy(true);
    crate::BlueGreen::wait_healthy(&fleet[1], "green").await;
    let (out, stdout, stderr) = fleet_cmd(&fleet, &["switch", "--to", "green"]).await;
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(bodies(&fleet).await, ["green\n"; 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_fails_is_compensated_on_the_others() {
    let mut fleet = three().await;
    let urls: Vec<String> = fleet.iter().map(BlueGreen::admin_base).collect();
    let mut cmd = fleet_command(
        &fleet,
        &[
            "switch",
            "--to",
            "green",
            "--pause-before-commit",
            "3s",
            "--timeout",
            "2s",
        ],
    );
    let run = tokio::task::spawn_blocking(move || cmd.output().expect("run turnout fleet"));
    // Once the last instance has prepared, it dies before the commit.
    turnout_testkit::eventually(10, "the third instance prepared", || async {
        fleet[2].turnout.find_log("switch prepared").is_some()
    })
    .await;
    let dead = fleet.pop().expect("three");
    drop(dead);
    let out = turnout_testkit::within(20, "turnout fleet", run)
        .await
        .expect("join");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(
        stdout.matches("committed, switched back").count(),
        2,
        "{stdout}"
    );
    let row = stdout
        .lines()
        .find(|l| l.starts_with(&urls[2]))
        .expect("a row for the dead instance");
    assert!(row.contains("commit unreachable"), "{row}");
    assert_eq!(bodies(&fleet).await, ["blue\n"; 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_status_flags_disagreement_and_bad_arguments_are_named() {
    let fleet = three().await;
    fleet[0].switch("green").await;
    let (out, stdout, stderr) = fleet_cmd(&fleet, &["status"]).await;
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("DISAGREE"), "{stderr}");

    let out = fleet[0]
        .sandbox
        .command(&["fleet", "switch", "--to", "green"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no instances"));

    let (out, _, stderr) = fleet_cmd(&fleet, &["switch", "--to", "purple"]).await;
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(bodies(&fleet).await, ["green\n", "blue\n", "blue\n"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_split_sets_the_same_canary_everywhere_and_rolls_back_together() {
    let fleet = three().await;
    for bg in &fleet {
        bg.wait_healthy("green").await;
    }
    let (out, stdout, stderr) = fleet_cmd(&fleet, &["split", "blue=90", "green=10"]).await;
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    for bg in &fleet {
        assert_eq!(
            bg.status().await["weights"],
            serde_json::json!({"blue": 90, "green": 10})
        );
    }
    let (out, stdout, stderr) = fleet_cmd(&fleet, &["status"]).await;
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(stdout.matches("blue=90 green=10").count(), 3, "{stdout}");

    // One instance whose green is down refuses: none changes.
    fleet[1].green.set_healthy(false);
    let (out, stdout, stderr) = fleet_cmd(&fleet, &["split", "blue=50", "green=50"]).await;
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("has no healthy server"), "{stdout}");
    for bg in &fleet {
        assert_eq!(bg.status().await["weights"]["green"], 10);
    }

    // Rollback: every instance back to the split before (all blue).
    fleet[1].green.set_healthy(true);
    let (out, stdout, stderr) = fleet_cmd(&fleet, &["rollback"]).await;
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(bodies(&fleet).await, ["blue\n"; 3]);
    for bg in &fleet {
        assert_eq!(
            bg.status().await["weights"],
            serde_json::json!({"blue": 100})
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_maintenance_and_pause_reach_every_instance_or_none() {
    let mut fleet = three().await;
    let (out, stdout, stderr) = fleet_cmd(
        &fleet,
        &["maintenance", "on", "--message", "upgrading the database"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(stdout.matches("maintenance ON").count(), 3, "{stdout}");
    for bg in &fleet {
        let a = turnout_testkit::client::get(
            &turnout_testkit::client::http_client(),
            &bg.turnout.url("/"),
        )
        .await
        .expect("answer");
        assert_eq!(a.status, 503);
        assert!(a.body.contains("upgrading the database"), "{}", a.body);
    }
    let (out, stdout, stderr) = fleet_cmd(&fleet, &["maintenance", "off"]).await;
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(bodies(&fleet).await, ["blue\n"; 3]);

    let (out, stdout, stderr) = fleet_cmd(&fleet, &["pause", "--max-hold", "20s"]).await;
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(stdout.matches("PAUSED").count(), 3, "{stdout}");
    let (out, stdout, stderr) = fleet_cmd(&fleet, &["resume"]).await;
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(bodies(&fleet).await, ["blue\n"; 3]);

    // One instance gone: the pause is undone on the others (all or none).
    fleet[2].turnout.signal("KILL");
    let _ = fleet[2].turnout.wait_exit(10).await;
    let (out, stdout, stderr) = fleet_cmd(&fleet, &["pause"]).await;
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(stdout.matches("done, undone").count(), 2, "{stdout}");
    assert!(stdout.contains("unreachable"), "{stdout}");
    for bg in &fleet[..2] {
        assert!(bg.status().await.get("paused").is_none());
        assert_eq!(bg.body("/").await, "blue\n");
    }
}
