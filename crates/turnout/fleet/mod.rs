//! `turnout fleet switch|split|rollback|rollout|status`: every instance flips together, or none
//! does (the guarded rollout of a fleet is in `fleet::rollout`).
//!
//! A switch is two-phase over each instance's admin API: prepare on all at once (each probes
//! its target pool and holds the switch under a token); if any prepare fails, abort the others
//! and stop, having changed nothing; else commit on all at once. If a commit fails after others
//! succeeded, the committed instances are switched back, and the table says which instance is
//! on which pool. Exit codes: 0 done, 1 refused with nothing changed, 2 a bad argument,
//! 4 the fleet is left mixed (an instance could not be switched back).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::{json, Value};

use crate::client::{admin_client, request, summary, AdminClient, Outcome};

mod rollout;
pub mod store;
mod store_rollout;
mod upgrade;

// clap turns doc comments into the command line's help: these are documented by their help
// text (`turnout help ...`), and a doc comment added here would change it.
#[allow(missing_docs)]
#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    /// An instance's admin API base URL, e.g. http://10.0.1.5:9901 (repeat for each).
    #[arg(long = "instance", value_name = "URL")]
    instances: Vec<String>,
    /// A file with one admin URL per line (blank lines and # comments skipped).
    #[arg(long, value_name = "FILE")]
    instances_file: Option<PathBuf>,
    /// The admin token, the same on every instance.
    #[arg(long, env = "TURNOUT_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// How long each admin call may take before its instance counts as failed.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// The fleet's etcd endpoint, e.g. http://10.0.0.5:2379 (repeat for each): the change goes
    /// through the fleet's desired state in etcd, which every member follows.
    #[arg(long = "etcd", value_name = "URL")]
    etcd: Vec<String>,
    /// The fleet's name in etcd ([fleet] name), with --etcd.
    #[arg(long = "fleet", value_name = "NAME")]
    fleet: Option<String>,
    /// Reach the fleet as this turnout config's [fleet] section does (endpoints, TLS).
    #[arg(long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// `status` through etcd: print the fleet as JSON.
    #[arg(long)]
    json: bool,
}

// clap turns doc comments into the command line's help: these are documented by their help
// text (`turnout help ...`), and a doc comment added here would change it.
#[allow(missing_docs)]
#[derive(Debug, clap::Args)]
pub struct PhaseArgs {
    /// How long each instance holds its prepared switch waiting for the commit.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    ttl: String,
    /// Wait this long between the prepare and the commit phase: a drill, to see what a
    /// failure in between does (kill an instance meanwhile).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pause_before_commit: Option<Duration>,
}

// clap turns doc comments into the command line's help: these are documented by their help
// text (`turnout help ...`), and a doc comment added here would change it.
#[allow(missing_docs)]
#[derive(Debug, clap::Subcommand)]
pub enum FleetCommand {
    /// Switch every instance to POOL, or none.
    Switch {
        /// The pool to switch to, e.g. green.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        fleet: FleetArgs,
        #[command(flatten)]
        phase: PhaseArgs,
    },
    /// Set the same split on every instance, or on none: `turnout fleet split blue=90 green=10
    /// --instance ...` (a fleet-wide canary).
    Split {
        /// POOL=WEIGHT, one per pool.
        #[arg(required = true, value_name = "POOL=WEIGHT", value_parser = crate::client::parse_weight)]
        weights: Vec<(String, i64)>,
        #[command(flatten)]
        fleet: FleetArgs,
        #[command(flatten)]
        phase: PhaseArgs,
    },
    /// Switch every instance back to its previous pool (or split), or none.
    Rollback {
        #[command(flatten)]
        fleet: FleetArgs,
        #[command(flatten)]
        phase: PhaseArgs,
    },
    /// A guarded rollout of every instance together: each step a fleet split (all or none),
    /// judged on the sum of every instance's counters; a failed check sends every instance back
    /// to the baseline. Each instance is held while the fleet is split: if this command dies,
    /// every instance goes back to the baseline by itself once --hold runs out. The policy is
    /// the built-in [rollout] defaults with these flags over them. Exit 0 passed, 1 rolled back.
    Rollout {
        /// The pool to roll out, e.g. green.
        #[arg(long)]
        to: String,
        // Boxed: the policy flags are most of the size of this variant.
        #[command(flatten)]
        policy: Box<crate::rollout::PolicyArgs>,
        /// A command (sh -c) run here once a step's checks pass; the step passes only if it
        /// exits 0 (env TURNOUT_ROLLOUT_TARGET, _BASELINE, _PERCENT): a smoke test through the
        /// load balancer, a webhook with curl.
        #[arg(long, value_name = "COMMAND")]
        check_cmd: Option<String>,
        /// How long an instance stays split without hearing from this command.
        #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
        hold: Duration,
        #[command(flatten)]
        fleet: FleetArgs,
        #[command(flatten)]
        phase: PhaseArgs,
    },
    /// Maintenance mode on every instance at once. `on` is all or none: if an instance refuses,
    /// the others are turned back off.
    Maintenance {
        state: crate::client::OnOff,
        #[arg(long)]
        message: Option<String>,
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// Pause every instance at once (all or none: if one refuses, the others resume).
    Pause {
        #[arg(long, value_name = "DURATION")]
        max_hold: Option<String>,
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// Resume every instance at once.
    Resume {
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// Replace the A/B rules of a fleet in etcd, on every member or none: FILE holds what
    /// `PUT /v1/rules` takes, {"rules": [{"header": "X-Beta", "equals": "1", "to": "green"}]}.
    Rules {
        /// The JSON file with the rules.
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// The in-place upgrade of turnout on every member of a fleet in etcd, a few at a time,
    /// each batch verified (rejoined on the fleet's generation, its 5xx rate within a point of
    /// the rest of the fleet's) before the next; stops at the first bad one. Exit 0 all
    /// upgraded, 1 stopped.
    Upgrade {
        /// The new turnout binary, at the same path on every member.
        #[arg(long, value_name = "PATH")]
        binary: PathBuf,
        /// How many members are upgraded at once.
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
        max_unavailable: u16,
        /// How long each batch is watched after its upgrade before the next starts.
        #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
        settle: Duration,
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// One line per instance: active pool, generation, healthy servers, in flight. Exit 1 when
    /// the instances disagree on the active pool, 2 when one cannot be reached.
    Status {
        #[command(flatten)]
        fleet: FleetArgs,
    },
}

/// `turnout fleet ...`.
pub fn run(command: FleetCommand) -> ExitCode {
    let _ = crate::client::AGENT.set("turnout-fleet");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    runtime.block_on(async {
        if let Some(target) = command.fleet_args().store() {
            return match target {
                Ok(t) => store::run(command, t).await,
                Err(e) => usage(&e),
            };
        }
        if command.fleet_args().json {
            return usage("--json is for turnout fleet status through etcd (--etcd or --config)");
        }
        match command {
            FleetCommand::Switch { to, fleet, phase } => match Fleet::new(&fleet) {
                Ok(f) => {
                    let targets = f.instances.iter().map(|_| json!({ "to": to })).collect();
                    f.two_phase(targets, &phase).await
                }
                Err(e) => usage(&e),
            },
            FleetCommand::Split {
                weights,
                fleet,
                phase,
            } => match Fleet::new(&fleet) {
                Ok(f) => {
                    let change = json!({ "weights": crate::client::weights_json(&weights) });
                    let targets = f.instances.iter().map(|_| change.clone()).collect();
                    f.two_phase(targets, &phase).await
                }
                Err(e) => usage(&e),
            },
            FleetCommand::Rollback { fleet, phase } => match Fleet::new(&fleet) {
                Ok(f) => f.rollback(&phase).await,
                Err(e) => usage(&e),
            },
            FleetCommand::Rollout {
                to,
                policy,
                check_cmd,
                hold,
                fleet,
                phase,
            } => match (Fleet::new(&fleet), policy.policy()) {
                (Ok(_), Ok(policy)) if policy.mirror_percent > 0 => usage(
                    "--mirror is for turnout rollout on one instance; a fleet rollout does not mirror",
                ),
                (Ok(f), Ok(mut policy)) => {
                    policy.check_cmd = check_cmd;
                    f.rollout(&to, &policy, &phase, hold).await
                }
                (Err(e), _) | (_, Err(e)) => usage(&e),
            },
            FleetCommand::Maintenance {
                state,
                message,
                fleet,
            } => match Fleet::new(&fleet) {
                Ok(f) => {
                    let (method, body) = crate::client::maintenance_call(state, message.as_deref());
                    let undo = (state == crate::client::OnOff::On)
                        .then_some((Method::DELETE, "/v1/maintenance"));
                    f.together(method, "/v1/maintenance", body, undo).await
                }
                Err(e) => usage(&e),
            },
            FleetCommand::Pause { max_hold, fleet } => match Fleet::new(&fleet) {
                Ok(f) => {
                    let body = max_hold.map(|d| json!({ "max_hold": d }));
                    f.together(Method::POST, "/v1/pause", body, Some((Method::POST, "/v1/resume")))
                        .await
                }
                Err(e) => usage(&e),
            },
            FleetCommand::Resume { fleet } => match Fleet::new(&fleet) {
                Ok(f) => f.together(Method::POST, "/v1/resume", None, None).await,
                Err(e) => usage(&e),
            },
            FleetCommand::Rules { .. } => usage(
                "turnout fleet rules sets a fleet's rules in etcd: give --etcd URL --fleet NAME (or --config FILE); for one instance, PUT /v1/rules",
            ),
            FleetCommand::Upgrade { .. } => usage(
                "turnout fleet upgrade follows a fleet's roster in etcd: give --etcd URL --fleet NAME (or --config FILE)",
            ),
            FleetCommand::Status { fleet } => match Fleet::new(&fleet) {
                Ok(f) => f.status().await,
                Err(e) => usage(&e),
            },
        }
    })
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("turnout fleet: {msg}");
    ExitCode::from(2)
}

struct Fleet {
    instances: Vec<String>,
    token: Option<String>,
    timeout: Duration,
    client: AdminClient,
}

/// What happened on one instance, for the table.
struct Row {
    instance: String,
    result: String,
    detail: String,
}

impl Row {
    fn new(instance: &str, (result, detail): (String, String)) -> Row {
        Row {
            instance: instance.to_owned(),
            result,
            detail,
        }
    }
}

impl Fleet {
    fn new(args: &FleetArgs) -> Result<Fleet, String> {
        let mut instances = args.instances.clone();
        if let Some(file) = &args.instances_file {
            let text = turnout_config::read_text_capped(file, turnout_config::MAX_CONFIG_BYTES)
                .map_err(|e| format!("cannot read --instances-file {}: {e}", file.display()))?;
            instances.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        if instances.is_empty() {
            return Err(
                "no instances: give --instance URL (repeatable) or --instances-file".into(),
            );
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = instances.iter().find(|i| !seen.insert(i.as_str())) {
            return Err(format!("instance {dup} is listed twice"));
        }
        Ok(Fleet {
            instances,
            token: args.token.clone(),
            timeout: args.timeout,
            client: admin_client(),
        })
    }

    async fn call(
        &self,
        instance: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Outcome {
        request(
            &self.client,
            instance,
            self.token.as_deref(),
            method,
            path,
            body,
            self.timeout,
        )
        .await
    }

    /// The same call on every instance at once (`body_for` gives each its body); answers in
    /// the instances' order.
    async fn all(
        &self,
        method: Method,
        path: &str,
        body_for: impl Fn(usize) -> Option<Value>,
    ) -> Vec<(Outcome, Instant)> {
        let calls = self.instances.iter().enumerate().map(|(i, instance)| {
            let (method, body) = (method.clone(), body_for(i));
            async move {
                let outcome = self.call(instance, method, path, body).await;
                (outcome, Instant::now())
            }
        });
        futures_util::future::join_all(calls).await
    }

    /// One call on every instance at once; with `undo`, all or none: when an instance refuses
    /// or cannot be reached, `undo` is called on the ones that took it. Exit 0 all took it,
    /// 1 refused (undone), 4 an undo failed (the fleet is mixed).
    async fn together(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        undo: Option<(Method, &str)>,
    ) -> ExitCode {
        let answers = self.all(method, path, |_| body.clone()).await;
        let ok: Vec<bool> = answers
            .iter()
            .map(|(o, _)| matches!(o, Outcome::Ok(_)))
            .collect();
        let all_ok = ok.iter().all(|&b| b);
        let has_undo = undo.is_some();
        let undone = match undo.filter(|_| !all_ok) {
            Some((m, p)) => Some(self.all(m, p, |i| ok[i].then(|| json!({}))).await),
            None => None,
        };
        let mut mixed = false;
        let rows = self
            .instances
            .iter()
            .enumerate()
            .zip(answers)
            .map(|((i, instance), (answer, _))| {
                let why = match (answer, undone.as_ref().map(|u| &u[i].0)) {
                    (Outcome::Ok(v), None) => ("done".into(), crate::client::gates_text(&v)),
                    (Outcome::Ok(_), Some(Outcome::Ok(v))) => {
                        ("done, undone".into(), crate::client::gates_text(v))
                    }
                    (Outcome::Ok(_), Some(other)) => {
                        mixed = true;
                        let (r, d) = failure(other.clone());
                        (format!("DONE, undo {r}"), d)
                    }
                    (other, _) => failure(other),
                };
                Row::new(instance, why)
            })
            .collect::<Vec<_>>();
        print_table(&rows);
        if all_ok {
            ExitCode::SUCCESS
        } else if mixed {
            eprintln!("turnout fleet: the fleet is MIXED: fix the instances marked DONE by hand");
            ExitCode::from(4)
        } else if has_undo {
            eprintln!("turnout fleet: not every instance took it; the others were undone");
            ExitCode::from(1)
        } else {
            eprintln!("turnout fleet: not every instance took it");
            ExitCode::from(1)
        }
    }

    async fn rollback(&self, phase: &PhaseArgs) -> ExitCode {
        // Each instance goes back to its own previous pool or split; all must have one.
        let statuses = self.all(Method::GET, "/v1/status", |_| None).await;
        let mut targets = Vec::new();
        let mut rows = Vec::new();
        for (instance, (outcome, _)) in self.instances.iter().zip(statuses) {
            let why = match outcome {
                Outcome::Ok(v) => match (v["previous_weights"].as_object(), v["previous"].as_str())
                {
                    (Some(split), _) if split.len() > 1 => {
                        targets.push(json!({ "weights": split }));
                        continue;
                    }
                    (_, Some(prev)) => {
                        targets.push(json!({ "to": prev }));
                        continue;
                    }
                    _ => ("no previous pool".into(), summary(&v)),
                },
                other => failure(other),
            };
            rows.push(Row::new(instance, why));
        }
        if !rows.is_empty() {
            print_table(&rows);
            eprintln!("turnout fleet: rollback refused; nothing was changed");
            return ExitCode::from(1);
        }
        self.two_phase(targets, phase).await
    }

    /// Prepare `targets[i]` (`{"to": POOL}` or `{"weights": {...}}`) on instance i, all at
    /// once; then commit all, or abort all.
    async fn two_phase(&self, targets: Vec<Value>, phase: &PhaseArgs) -> ExitCode {
        // 1. Prepare everywhere, under one mark: a client the new version served on an instance
        //    that committed first is sent to the new version by the others too.
        let mark = format!(
            "f{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let prepared = self
            .all(Method::POST, "/v1/prepare", |i| {
                let mut body = targets[i].clone();
                body["ttl"] = json!(phase.ttl);
                // A mark goes with a switch: it names the pool marked clients stay on.
                if body.get("to").is_some() {
                    body["mark"] = json!(mark);
                }
                Some(body)
            })
            .await;
        let tokens: Vec<Option<String>> = prepared
            .iter()
            .map(|(o, _)| match o {
                Outcome::Ok(v) => v["token"].as_str().map(str::to_owned),
                _ => None,
            })
            .collect();
        if tokens.iter().any(Option::is_none) {
            // 2a. Any refusal: abort the prepared ones, change nothing.
            let aborted = self
                .all(Method::POST, "/v1/abort", |i| {
                    tokens[i].as_ref().map(|t| json!({ "token": t }))
                })
                .await;
            let rows = self
                .instances
                .iter()
                .zip(prepared)
                .zip(aborted)
                .map(|((instance, (prep, _)), (abort, _))| {
                    let why = match prep {
                        Outcome::Ok(_) => match abort {
                            Outcome::Ok(_) => ("ready, aborted".into(), String::new()),
                            other => {
                                let (r, d) = failure(other);
                                (
                                    format!("ready, abort {r}"),
                                    format!("{d} (the prepare expires by itself)"),
                                )
                            }
                        },
                        other => failure(other),
                    };
                    Row::new(instance, why)
                })
                .collect::<Vec<_>>();
            print_table(&rows);
            eprintln!("turnout fleet: not every instance could switch; nothing was changed");
            return ExitCode::from(1);
        }

        if let Some(pause) = phase.pause_before_commit {
            eprintln!(
                "turnout fleet: all prepared; pausing {} before the commit",
                humantime::format_duration(pause)
            );
            tokio::time::sleep(pause).await;
        }

        // 2b. Commit everywhere, at once.
        let sent = Instant::now();
        let committed = self
            .all(Method::POST, "/v1/commit", |i| {
                tokens[i].as_ref().map(|t| json!({ "token": t }))
            })
            .await;
        let ok: Vec<bool> = committed
            .iter()
            .map(|(o, _)| matches!(o, Outcome::Ok(_)))
            .collect();
        if ok.iter().all(|&b| b) {
            let times: Vec<Instant> = committed.iter().map(|(_, t)| *t).collect();
            let first = times.iter().min().copied().unwrap_or(sent);
            let last = times.iter().max().copied().unwrap_or(sent);
            let rows = self
                .instances
                .iter()
                .zip(&committed)
                .map(|(instance, (o, _))| {
                    let detail = match o {
                        Outcome::Ok(v) => summary(v),
                        _ => String::new(),
                    };
                    Row::new(instance, ("switched".into(), detail))
                })
                .collect::<Vec<_>>();
            print_table(&rows);
            println!(
                "skew: {:.2} ms between the first and the last commit answered \
                 ({:.2} ms from sending the commits to the last answer)",
                ms(last - first),
                ms(last - sent)
            );
            return ExitCode::SUCCESS;
        }

        // 3. Some commits failed: switch the committed instances back.
        let undo = self
            .all(Method::POST, "/v1/rollback", |i| {
                ok[i].then(|| json!({ "force": true }))
            })
            .await;
        let mut mixed = false;
        let rows = self
            .instances
            .iter()
            .enumerate()
            .zip(committed)
            .zip(undo)
            .map(|(((i, instance), (commit, _)), (undo, _))| {
                let why = if ok[i] {
                    match undo {
                        Outcome::Ok(v) => ("committed, switched back".into(), summary(&v)),
                        other => {
                            mixed = true;
                            let (r, d) = failure(other);
                            (
                                format!("ON {}: switch-back {r}", change_text(&targets[i])),
                                d,
                            )
                        }
                    }
                } else {
                    let (r, d) = failure(commit);
                    (format!("commit {r}"), d)
                };
                Row::new(instance, why)
            })
            .collect::<Vec<_>>();
        print_table(&rows);
        if mixed {
            eprintln!(
                "turnout fleet: the fleet is MIXED: the instances marked ON are on the new pool; \
                 fix them by hand (turnout rollback --admin URL)"
            );
            ExitCode::from(4)
        } else {
            eprintln!("turnout fleet: a commit failed; the instances that had switched were switched back");
            ExitCode::from(1)
        }
    }

    async fn status(&self) -> ExitCode {
        let answers = self.all(Method::GET, "/v1/status", |_| None).await;
        println!(
            "{:<28} {:<10} {:>10} {:>9}  HEALTHY SERVERS",
            "INSTANCE", "ACTIVE/SPLIT", "GENERATION", "IN-FLIGHT"
        );
        let mut actives = std::collections::BTreeSet::new();
        let mut unreachable = false;
        for (instance, (outcome, _)) in self.instances.iter().zip(answers) {
            match outcome {
                Outcome::Ok(v) => {
                    // The split when there is one: instances agree only if their splits do.
                    let active = match v["weights"].as_object().filter(|w| w.len() > 1) {
                        Some(split) => crate::client::weights_text(split),
                        None => v["active"].as_str().unwrap_or("?").to_owned(),
                    };
                    let mut in_flight = 0;
                    let mut healthy = Vec::new();
                    if let Some(pools) = v["pools"].as_object() {
                        for (name, pool) in pools {
                            in_flight += pool["in_flight"].as_u64().unwrap_or(0);
                            let total = pool["servers"].as_array().map_or(0, Vec::len);
                            healthy.push(format!("{name} {}/{total}", pool["healthy_servers"]));
                        }
                    }
                    println!(
                        "{:<28} {:<10} {:>10} {:>9}  {}",
                        instance,
                        active,
                        v["generation"].to_string(),
                        in_flight,
                        healthy.join(", ")
                    );
                    actives.insert(active);
                }
                other => {
                    unreachable = true;
                    let (r, d) = failure(other);
                    println!("{instance:<28} {r}: {d}");
                }
            }
        }
        if unreachable {
            return ExitCode::from(2);
        }
        if actives.len() > 1 {
            let list: Vec<_> = actives.into_iter().collect();
            eprintln!(
                "turnout fleet: the instances DISAGREE on the active pool or split ({})",
                list.join(", ")
            );
            return ExitCode::from(1);
        }
        ExitCode::SUCCESS
    }
}

/// `green` or `blue=90 green=10`, for the table.
fn change_text(target: &Value) -> String {
    match (target["to"].as_str(), target["weights"].as_object()) {
        (Some(to), _) => to.to_owned(),
        (None, Some(w)) => crate::client::weights_text(w),
        _ => target.to_string(),
    }
}

fn failure(outcome: Outcome) -> (String, String) {
    match outcome {
        Outcome::Ok(v) => ("ok".into(), summary(&v)),
        Outcome::Refused(status, msg) => (format!("refused ({})", status.as_u16()), msg),
        Outcome::Unreachable(msg) => ("unreachable".into(), msg),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn print_table(rows: &[Row]) {
    let width = rows
        .iter()
        .map(|r| r.instance.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let rwidth = rows
        .iter()
        .map(|r| r.result.len())
        .max()
        .unwrap_or(6)
        .max(6);
    println!("{:<width$}  {:<rwidth$}  DETAIL", "INSTANCE", "RESULT");
    for r in rows {
        println!(
            "{:<width$}  {:<rwidth$}  {}",
            r.instance, r.result, r.detail
        );
    }
}
