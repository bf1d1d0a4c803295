//! `turnout rollout POOL`: starts a guarded rollout through the admin API and follows it to its
//! end, a line per step judged; exit 0 when the pool took every new client, 1 when the rollout
//! failed or was aborted (every new client is back on the baseline), 2 when the API could not be
//! reached. `turnout rollout --abort` stops the one under way; `--pause` and `--resume` hold it
//! at its step and let it go on.

use std::process::ExitCode;
use std::time::Duration;

use http::Method;
use serde_json::{Map, Value};

use crate::client::{self, AdminArgs, Outcome};

// clap turns doc comments into the command line's help: these are documented by their help
// text (`turnout help ...`), and a doc comment added here would change it.
#[allow(missing_docs)]
#[derive(Debug, clap::Args)]
pub struct RolloutArgs {
    /// The pool to roll out, e.g. green (not with --abort, --pause or --resume).
    #[arg(required_unless_present_any = ["abort", "pause", "resume"])]
    pool: Option<String>,
    /// Stop the rollout under way: every new client back to the baseline.
    #[arg(long, conflicts_with_all = ["pool", "pause", "resume"])]
    abort: bool,
    /// Hold the rollout under way at its step (a failing check still rolls it back).
    #[arg(long, conflicts_with_all = ["pool", "resume"])]
    pause: bool,
    /// Let a paused rollout go on.
    #[arg(long, conflicts_with = "pool")]
    resume: bool,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Skip the health gate before the first step and the last.
    #[arg(long)]
    force: bool,
    /// After the last step, wait this long at most for the baseline to drain ("30s").
    #[arg(long, value_name = "DURATION")]
    wait_drained: Option<String>,
    /// After the last step, close the baseline's WebSockets after this long (1001 Going Away).
    #[arg(long, value_name = "DURATION")]
    close_tunnels_after: Option<String>,
    /// Start it and return at once, without following it.
    #[arg(long)]
    no_follow: bool,
}

/// The rollout policy's fields a command line may set; the rest keep `[rollout]`'s values (the
/// instance's, for `turnout rollout`; the defaults, for `turnout fleet rollout`).
#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    /// The target's share at each step, in percent, ending at 100: "5,25,50,100".
    #[arg(long, value_delimiter = ',', value_name = "PERCENT,...")]
    steps: Option<Vec<u32>>,
    /// How long each step runs before it is judged ("60s").
    #[arg(long, value_name = "DURATION")]
    bake: Option<String>,
    /// Requests the target must answer in a step before its verdict.
    #[arg(long, value_name = "N")]
    min_requests: Option<u64>,
    /// How much longer than --bake a step waits for --min-requests before it fails.
    #[arg(long, value_name = "DURATION")]
    max_wait: Option<String>,
    /// The target's 5xx rate that fails a step whatever the baseline's (0.05 = 5%).
    #[arg(long, value_name = "RATE")]
    max_error_rate: Option<f64>,
    /// A step fails when the target's 5xx rate is above this many times the baseline's
    /// (above --error-floor).
    #[arg(long, value_name = "RATIO")]
    max_error_ratio: Option<f64>,
    /// 5xx rates under this are never judged against the baseline's (0.01 = 1%).
    #[arg(long, value_name = "RATE")]
    error_floor: Option<f64>,
    /// A step fails when the target's p95 latency is above this many times the baseline's.
    #[arg(long, value_name = "RATIO")]
    max_p95_ratio: Option<f64>,
    /// A step fails when the target's p99 latency is above this many times the baseline's.
    #[arg(long, value_name = "RATIO")]
    max_p99_ratio: Option<f64>,
    /// Latencies under this are never judged slow ("50ms").
    #[arg(long, value_name = "DURATION")]
    latency_floor: Option<String>,
    /// Before the first step, copy this share (percent) of live GET/HEAD/OPTIONS requests to
    /// the target for a bake, its answers thrown away, and judge it like a step.
    #[arg(long, value_name = "PERCENT")]
    mirror: Option<u32>,
}

impl PolicyArgs {
    /// The fields set, as `POST /v1/rollout` takes them.
    fn insert_into(&self, body: &mut Map<String, Value>) {
        if let Some(steps) = &self.steps {
            body.insert("steps".into(), steps.clone().into());
        }
        for (key, value) in [
            ("bake", &self.bake),
            ("max_wait", &self.max_wait),
            ("latency_floor", &self.latency_floor),
        ] {
            if let Some(v) = value {
                body.insert(key.into(), v.as_str().into());
            }
        }
        if let Some(n) = self.min_requests {
            body.insert("min_requests".into(), n.into());
        }
        if let Some(m) = self.mirror {
            body.insert("mirror_percent".into(), m.into());
        }
        for (key, value) in [
            ("max_error_rate", self.max_error_rate),
            ("max_error_ratio", self.max_error_ratio),
            ("error_floor", self.error_floor),
            ("max_p95_ratio", self.max_p95_ratio),
            ("max_p99_ratio", self.max_p99_ratio),
        ] {
            if let Some(v) = value {
                body.insert(key.into(), v.into());
            }
        }
    }

    /// The policy these fields make over the defaults; the error names the flag.
    pub fn policy(&self) -> Result<turnout_core::RolloutPolicy, String> {
        let duration = |flag: &str, v: &Option<String>| {
            v.as_deref()
                .map(|text| {
                    turnout_core::parse_duration(text)
                        .map(turnout_core::HumanDuration)
                        .map_err(|e| format!("--{flag}: {e}"))
                })
                .transpose()
        };
        let over = turnout_core::RolloutOverrides {
            steps: self.steps.clone(),
            bake: duration("bake", &self.bake)?,
            min_requests: self.min_requests,
            max_wait: duration("max-wait", &self.max_wait)?,
            max_error_rate: self.max_error_rate,
            max_error_ratio: self.max_error_ratio,
            error_floor: self.error_floor,
            max_p95_ratio: self.max_p95_ratio,
            max_p99_ratio: self.max_p99_ratio,
            latency_floor: duration("latency-floor", &self.latency_floor)?,
            mirror_percent: self.mirror,
            ..Default::default()
        };
        turnout_core::RolloutPolicy::default()
            .merged(&over)
            .map_err(|(field, message)| format!("--{}: {message}", field.replace('_', "-")))
    }
}

/// How often a followed rollout is asked about.
const POLL: Duration = Duration::from_millis(500);

/// `turnout rollout`: starts a guarded rollout and follows it to its end.
pub fn run(admin: &AdminArgs, args: &RolloutArgs) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    runtime.block_on(async {
        if args.pause || args.resume {
            let path = if args.pause {
                "/v1/rollout/pause"
            } else {
                "/v1/rollout/resume"
            };
            return match client::call_async(admin, Method::POST, path, None).await {
                Outcome::Ok(v) => {
                    println!(
                        "rollout {} of {} {} at {}%",
                        v["id"],
                        v["target"].as_str().unwrap_or("?"),
                        if args.pause { "paused" } else { "resumed" },
                        v["percent"]
                    );
                    ExitCode::SUCCESS
                }
                other => client::report_failure(other),
            };
        }
        if args.abort {
            return match client::call_async(admin, Method::POST, "/v1/rollout/abort", None).await {
                Outcome::Ok(v) => {
                    println!(
                        "rollout {} of {} aborted; new clients go back to {}",
                        v["id"],
                        v["target"].as_str().unwrap_or("?"),
                        v["baseline"].as_str().unwrap_or("?")
                    );
                    ExitCode::SUCCESS
                }
                other => client::report_failure(other),
            };
        }
        let started =
            match client::call_async(admin, Method::POST, "/v1/rollout", Some(body(args))).await {
                Outcome::Ok(v) => v,
                other => return client::report_failure(other),
            };
        let id = started["id"].as_u64().unwrap_or(0);
        println!(
            "rollout {id}: {} -> {}, steps {}, bake {} ms each",
            started["baseline"].as_str().unwrap_or("?"),
            started["target"].as_str().unwrap_or("?"),
            started["policy"]["steps"],
            started["policy"]["bake"]
        );
        if args.no_follow {
            return ExitCode::SUCCESS;
        }
        match follow(admin, id).await {
            Followed::Passed { drained: false } => {
                println!("not drained: the baseline still had requests in flight");
                ExitCode::from(3)
            }
            Followed::Passed { drained: true } => ExitCode::SUCCESS,
            Followed::Ended => ExitCode::from(1),
            Followed::Lost(code) => code,
        }
    })
}

/// How a followed rollout ended.
#[derive(Debug)]
pub enum Followed {
    /// The target takes every new client; `drained`: the baseline has nothing in flight (or no
    /// wait for it was asked).
    Passed {
        /// The baseline drained, or no wait for it was asked.
        drained: bool,
    },
    /// Failed or aborted: every new client is back on the baseline.
    Ended,
    /// The admin API stopped answering, or forgot the rollout: the exit code said so.
    Lost(ExitCode),
}

/// Follows rollout `id` to its end: a line on stdout per step judged, the step baking on
/// stderr, and the outcome.
pub async fn follow(admin: &AdminArgs, id: u64) -> Followed {
    let mut printed = 0;
    let mut progress = Progress::new();
    loop {
        tokio::time::sleep(POLL).await;
        let v = match client::call_async(admin, Method::GET, "/v1/rollout", None).await {
            Outcome::Ok(v) => v,
            other => return Followed::Lost(client::report_failure(other)),
        };
        // Under way, or ended and in the history.
        let report = if v["current"]["id"].as_u64() == Some(id) {
            v["current"].clone()
        } else if let Some(done) = v["history"]
            .as_array()
            .and_then(|h| h.iter().find(|r| r["id"].as_u64() == Some(id)))
        {
            done.clone()
        } else {
            eprintln!("turnout: rollout {id} is no longer known to the admin API");
            return Followed::Lost(ExitCode::from(1));
        };
        let steps = report["steps"].as_array().cloned().unwrap_or_default();
        if steps.len() > printed {
            progress.clear();
        }
        for step in steps.iter().skip(printed) {
            println!("{}", step_line(step));
        }
        printed = steps.len();
        if let Some(baking) = report.get("baking").filter(|b| b.is_object()) {
            progress.show(&baking_line(baking, &report["policy"]));
        }
        if report["outcome"].as_str() != Some("running") {
            progress.clear();
        }
        match report["outcome"].as_str() {
            Some("running") => continue,
            Some("passed") => {
                println!(
                    "passed: {} takes every new client ({} ms)",
                    report["target"].as_str().unwrap_or("?"),
                    report["took_ms"]
                );
                return Followed::Passed {
                    drained: report["drained"] != Value::Bool(false),
                };
            }
            outcome => {
                println!(
                    "{}: back on {}: {}",
                    outcome.unwrap_or("ended"),
                    report["baseline"].as_str().unwrap_or("?"),
                    report["reason"].as_str().unwrap_or("?")
                );
                return Followed::Ended;
            }
        }
    }
}

/// The step baking, on stderr: at a terminal one line rewritten at each poll, elsewhere (a CI
/// log) a line every 10 s, so a 60 s bake is never silent.
pub(crate) struct Progress {
    tty: bool,
    drawn: bool,
    last: Option<std::time::Instant>,
}

impl Progress {
    pub(crate) fn new() -> Progress {
        Progress {
            tty: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            drawn: false,
            last: None,
        }
    }

    pub(crate) fn show(&mut self, line: &str) {
        if self.tty {
            eprint!("\r\x1b[2K{line}");
            self.drawn = true;
        } else if self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            eprintln!("{line}");
            self.last = Some(std::time::Instant::now());
        }
    }

    pub(crate) fn clear(&mut self) {
        if self.drawn {
            eprint!("\r\x1b[2K");
            self.drawn = false;
        }
    }
}

/// "step 25%: baking 12 s of 60 s: target 41 requests, 0.0% 5xx, p95 2.1 ms | baseline ...".
fn baking_line(step: &Value, policy: &Value) -> String {
    let line = step_line(step);
    let rest = line.split_once(": ").map_or(line.as_str(), |(_, r)| r);
    let rest = rest.split_once(": ").map_or(rest, |(_, r)| r);
    format!(
        "step {}%: baking {} s of {} s: {rest}",
        step["percent"],
        step["ran_ms"].as_u64().unwrap_or(0) / 1000,
        policy["bake"].as_u64().unwrap_or(0) / 1000
    )
}

fn body(args: &RolloutArgs) -> Value {
    let mut body = Map::new();
    body.insert("to".into(), args.pool.clone().unwrap_or_default().into());
    args.policy.insert_into(&mut body);
    crate::client::insert_switch_options(
        &mut body,
        args.force,
        args.wait_drained.as_deref(),
        args.close_tunnels_after.as_deref(),
    );
    Value::Object(body)
}

/// "step 5%: pass after 2013 ms: target 312 requests, 0.0% 5xx, p95 2.1 ms | baseline ...".
pub fn step_line(step: &Value) -> String {
    let side = |w: &Value| {
        format!(
            "{} requests, {:.1}% 5xx, p95 {}",
            w["requests"],
            w["error_rate"].as_f64().unwrap_or(0.0) * 100.0,
            w["p95_ms"]
                .as_f64()
                .map_or_else(|| "-".to_string(), |ms| format!("{ms:.1} ms"))
        )
    };
    let check = step["check"]
        .as_str()
        .map_or_else(String::new, |c| format!(" on {c}"));
    format!(
        "step {}%: {}{check} after {} ms: target {} | baseline {}",
        step["percent"],
        step["verdict"].as_str().unwrap_or("?"),
        step["ran_ms"],
        side(&step["target"]),
        side(&step["baseline"])
    )
}
