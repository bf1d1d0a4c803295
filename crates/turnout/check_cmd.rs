//! A rollout step's `check_cmd`, run with `sh -c` once the step's own checks passed: exit 0
//! lets the step pass. It sees the step in its environment (`TURNOUT_ROLLOUT_TARGET`,
//! `_BASELINE`, `_PERCENT`). Here, in the binary, because turnout-core starts no process; the
//! instance's rollouts reach it through [`ShellCheck`], a fleet rollout's coordinator calls
//! [`run_check`] on its own machine.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// How long `check_cmd` may run.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// [`run_check`] as turnout-core's `StepCheck`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShellCheck;

impl turnout_core::StepCheck for ShellCheck {
    fn check(
        &self,
        cmd: &str,
        target: &str,
        baseline: &str,
        percent: u32,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
        let (cmd, target, baseline) = (cmd.to_owned(), target.to_owned(), baseline.to_owned());
        Box::pin(async move { run_check(&cmd, &target, &baseline, percent).await })
    }
}

/// Runs `cmd` with `sh -c` for a step of `percent` of new clients on `target` (from
/// `baseline`), bounded by [`CHECK_TIMEOUT`]. `Err` says why it did not pass, with the end of
/// what it wrote to stderr.
pub async fn run_check(
    cmd: &str,
    target: &str,
    baseline: &str,
    percent: u32,
) -> Result<(), String> {
    let run = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("TURNOUT_ROLLOUT_TARGET", target)
        .env("TURNOUT_ROLLOUT_BASELINE", baseline)
        .env("TURNOUT_ROLLOUT_PERCENT", percent.to_string())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(CHECK_TIMEOUT, run).await {
        Err(_) => Err(format!(
            "check_cmd did not finish within {}s",
            CHECK_TIMEOUT.as_secs()
        )),
        Ok(Err(e)) => Err(format!("check_cmd could not run: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: String = stderr
                .trim()
                .chars()
                .rev()
                .take(300)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            Err(format!("check_cmd failed ({}): {tail}", out.status))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_step_is_in_the_environment_and_a_failure_says_the_end_of_stderr() {
        let ok = run_check(
            r#"test "$TURNOUT_ROLLOUT_TARGET/$TURNOUT_ROLLOUT_BASELINE/$TURNOUT_ROLLOUT_PERCENT" = green/blue/25"#,
            "green",
            "blue",
            25,
        )
        .await;
        assert_eq!(ok, Ok(()));
        let failed = run_check("echo 'error rate too high' >&2; exit 3", "green", "blue", 5)
            .await
            .expect_err("exit 3 fails the step");
        assert!(failed.contains("exit status: 3"), "{failed}");
        assert!(failed.ends_with("error rate too high"), "{failed}");
        // Huge output: only its last 300 characters are said.
        let long = run_check(
            "head -c 100000 /dev/zero | tr '\\0' x >&2; exit 1",
            "g",
            "b",
            1,
        )
        .await
        .expect_err("fails");
        assert!(long.len() < 400, "{}", long.len());
    }
}
