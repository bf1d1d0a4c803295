//! `turnout fleet ... --etcd URL --fleet NAME` (or `--config FILE`): the fleet's changes
//! through its desired state in etcd (turnout-fleet's coordinator), and its status; and the
//! etcd options both the command line and a serving member build from `[fleet]`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;
use turnout_fleet::coordinator::{self, Plan};
use turnout_fleet::{Change, EtcdOptions, EtcdStore, FleetError, FleetRead, FleetStore};

use super::{FleetArgs, FleetCommand, PhaseArgs};

/// Where the fleet's store is, from the command line.
pub(super) struct Target {
    fleet: String,
    options: EtcdOptions,
}

impl Target {
    /// The fleet's store, or the exit code of a failure, said.
    async fn connect(&self) -> Result<EtcdStore, ExitCode> {
        EtcdStore::connect(&self.fleet, &self.options)
            .await
            .map_err(|e| failed(&self.fleet, &e))
    }
}

/// The etcd user and password from the environment: both or neither; set but empty is a
/// mistake (a secret that did not expand).
fn credentials() -> Result<Option<(String, String)>, String> {
    let user = std::env::var("TURNOUT_ETCD_USER").ok();
    let password = std::env::var("TURNOUT_ETCD_PASSWORD").ok();
    match (user, password) {
        (None, None) => Ok(None),
        (Some(u), Some(p)) if !u.is_empty() && !p.is_empty() => Ok(Some((u, p))),
        (Some(_), Some(_)) => {
            Err("TURNOUT_ETCD_USER or TURNOUT_ETCD_PASSWORD is set but empty".into())
        }
        _ => Err(
            "TURNOUT_ETCD_USER and TURNOUT_ETCD_PASSWORD go together: set both, or neither".into(),
        ),
    }
}

/// How to reach `[fleet]`'s etcd: its endpoints, the environment's credentials, and the TLS
/// files read now (an unreadable one is named).
pub fn etcd_options(
    fleet: &turnout_config::fleet::Fleet,
    timeout: Duration,
) -> Result<EtcdOptions, String> {
    let read = |key: &str, path: &Path| {
        turnout_config::read_capped(path, 1 << 20)
            .map_err(|e| format!("cannot read {key} ({}): {e}", path.display()))
    };
    let tls = match &fleet.tls {
        None => None,
        Some(t) => {
            let ca = read("[fleet.tls] ca", &t.ca)?;
            let identity = match &t.identity {
                None => None,
                Some((c, k)) => Some((read("[fleet.tls] cert", c)?, read("[fleet.tls] key", k)?)),
            };
            Some(turnout_fleet::EtcdTls { ca, identity })
        }
    };
    Ok(EtcdOptions {
        endpoints: fleet.etcd.clone(),
        user: credentials()?,
        tls,
        timeout,
    })
}

impl FleetArgs {
    /// The store these arguments name, if they name one (`None`: the instances' admin APIs).
    pub(super) fn store(&self) -> Option<Result<Target, String>> {
        if self.etcd.is_empty() && self.config.is_none() && self.fleet.is_none() {
            return None;
        }
        Some(self.store_target())
    }

    fn store_target(&self) -> Result<Target, String> {
        if !self.instances.is_empty() || self.instances_file.is_some() {
            return Err("--instance/--instances-file and --etcd/--config are two ways to reach a fleet: give one".into());
        }
        if let Some(path) = &self.config {
            if !self.etcd.is_empty() {
                return Err(
                    "--config names the etcd endpoints already ([fleet] etcd): drop --etcd".into(),
                );
            }
            let config = turnout_config::Config::load(path).map_err(|e| e.to_string())?;
            let Some(fleet) = config.fleet else {
                return Err(format!("{} has no [fleet] section", path.display()));
            };
            let name = self.fleet.clone().unwrap_or_else(|| fleet.name.clone());
            return Ok(Target {
                options: etcd_options(&fleet, self.timeout)?,
                fleet: name,
            });
        }
        let Some(name) = &self.fleet else {
            return Err(
                "--etcd needs --fleet NAME (or give --config FILE with a [fleet] section)".into(),
            );
        };
        if !turnout_config::fleet::valid_name(name) {
            return Err(format!(
                "invalid --fleet {name:?}: 1 to 64 of A-Z a-z 0-9 . _ -"
            ));
        }
        if self.etcd.is_empty() {
            return Err("--fleet needs --etcd URL (or --config FILE)".into());
        }
        if let Some(bad) = self
            .etcd
            .iter()
            .find(|e| !e.starts_with("http://") || e.len() <= "http://".len())
        {
            return Err(format!("invalid --etcd {bad:?}: write it as http://HOST:PORT (for https, give --config with [fleet.tls])"));
        }
        Ok(Target {
            fleet: name.clone(),
            options: EtcdOptions {
                endpoints: self.etcd.clone(),
                user: credentials()?,
                tls: None,
                timeout: self.timeout,
            },
        })
    }
}

impl FleetCommand {
    /// The fleet arguments of any subcommand.
    pub(super) fn fleet_args(&self) -> &FleetArgs {
        match self {
            FleetCommand::Switch { fleet, .. }
            | FleetCommand::Split { fleet, .. }
            | FleetCommand::Rollback { fleet, .. }
            | FleetCommand::Rollout { fleet, .. }
            | FleetCommand::Maintenance { fleet, .. }
            | FleetCommand::Pause { fleet, .. }
            | FleetCommand::Resume { fleet }
            | FleetCommand::Upgrade { fleet, .. }
            | FleetCommand::Rules { fleet, .. }
            | FleetCommand::Status { fleet } => fleet,
        }
    }
}

/// The rules in `file`: `{"rules": [...]}`, as `PUT /v1/rules` takes them; an error names the
/// file and what is wrong.
fn read_rules(file: &Path) -> Result<Vec<turnout_core::RuleSpec>, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RulesFile {
        rules: Vec<turnout_core::RuleSpec>,
    }
    let bytes = turnout_config::read_capped(file, 1 << 20)
        .map_err(|e| format!("cannot read --file {}: {e}", file.display()))?;
    serde_json::from_slice::<RulesFile>(&bytes)
        .map(|r| r.rules)
        .map_err(|e| {
            format!(
                "--file {}: not the rules as PUT /v1/rules takes them ({{\"rules\": [...]}}): {e}",
                file.display()
            )
        })
}

/// Who is changing the fleet: `user@host:pid`.
fn who() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "turnout".into());
    format!(
        "{user}@{}:{}",
        turnout_fleet::member::host_name(),
        std::process::id()
    )
}

fn plan(phase: Option<&PhaseArgs>, timeout: Duration) -> Result<Plan, String> {
    let ttl = match phase {
        Some(p) => turnout_core::parse_duration(&p.ttl).map_err(|e| format!("--ttl: {e}"))?,
        None => Duration::from_secs(30),
    };
    if ttl < Duration::from_secs(2) {
        return Err("--ttl must be at least 2s (the fleet lock is an etcd lease)".into());
    }
    Ok(Plan {
        who: who(),
        ttl,
        ack_timeout: timeout,
        apply_timeout: timeout,
        pause_before_commit: phase.and_then(|p| p.pause_before_commit),
    })
}

/// Runs `command` through the store at `target`.
pub(super) async fn run(command: FleetCommand, target: Target) -> ExitCode {
    let timeout = command.fleet_args().timeout;
    let (change, phase) = match command {
        FleetCommand::Status { fleet } => return status(&target, fleet.json).await,
        FleetCommand::Upgrade {
            binary,
            max_unavailable,
            settle,
            fleet,
        } => {
            let store = match target.connect().await {
                Ok(s) => s,
                Err(code) => return code,
            };
            let u = super::upgrade::Upgrade {
                binary: &binary,
                max_unavailable: usize::from(max_unavailable),
                settle,
                token: fleet.token.clone(),
                timeout,
            };
            return super::upgrade::upgrade(&store, &u).await;
        }
        FleetCommand::Switch { to, phase, .. } => (Change::Switch { to }, Some(phase)),
        FleetCommand::Rollback { phase, .. } => (Change::Rollback, Some(phase)),
        FleetCommand::Split { weights, phase, .. } => {
            let mut w = Vec::new();
            for (pool, weight) in weights {
                match u32::try_from(weight) {
                    Ok(x) if x <= 1_000_000 => w.push((pool, x)),
                    _ => {
                        return super::usage(&format!("{pool}={weight}: a weight is 0 to 1000000"))
                    }
                }
            }
            (Change::Split { weights: w }, Some(phase))
        }
        FleetCommand::Maintenance { state, message, .. } => (
            Change::Maintenance {
                on: state == crate::client::OnOff::On,
                message,
            },
            None,
        ),
        FleetCommand::Pause {
            max_hold: Some(_), ..
        } => {
            return super::usage(
                "--max-hold is each instance's [pause] max_hold when the fleet is in etcd; drop it",
            )
        }
        FleetCommand::Rules { file, .. } => match read_rules(&file) {
            Ok(rules) => (Change::Rules { rules }, None),
            Err(e) => return super::usage(&e),
        },
        FleetCommand::Pause { .. } => (Change::Pause, None),
        FleetCommand::Resume { .. } => (Change::Resume, None),
        FleetCommand::Rollout {
            to,
            policy,
            check_cmd,
            phase,
            fleet,
            hold,
        } => {
            let mut policy = match policy.policy() {
                Ok(p) if p.mirror_percent > 0 => return super::usage("--mirror is for turnout rollout on one instance; a fleet rollout does not mirror"),
                Ok(p) => p,
                Err(e) => return super::usage(&e),
            };
            policy.check_cmd = check_cmd;
            let mut plan = match plan(Some(&phase), timeout) {
                Ok(p) => p,
                Err(e) => return super::usage(&e),
            };
            // The fleet stays split without this command for --hold at most: the lock's lease.
            if hold < Duration::from_secs(2) {
                return super::usage(
                    "--hold must be at least 2s with --etcd (it is the fleet lock's lease)",
                );
            }
            plan.ttl = hold;
            let store = match target.connect().await {
                Ok(s) => s,
                Err(code) => return code,
            };
            return super::store_rollout::rollout(
                &store,
                &to,
                &policy,
                &plan,
                fleet.token.clone(),
                timeout,
            )
            .await;
        }
    };
    let plan = match plan(phase.as_ref(), timeout) {
        Ok(p) => p,
        Err(e) => return super::usage(&e),
    };
    let store = match target.connect().await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let name = target.fleet.clone();
    let mut progress = |line: &str| eprintln!("fleet {name}: {line}");
    match coordinator::change(&store, &change, &plan, &mut progress).await {
        Ok(done) => {
            let total = done.applied.len();
            let late: Vec<&str> = done
                .applied
                .iter()
                .filter(|(_, a)| a.is_none())
                .map(|(m, _)| m.as_str())
                .collect();
            let ms = |d: Option<Duration>| {
                d.map_or_else(|| "-".to_string(), |s| format!("{} ms", s.as_millis()))
            };
            println!(
                "fleet {}: generation {} ({}) committed; {}/{} member(s) applied it, the last {} after the commit, {} after the first; {} store writes",
                target.fleet,
                done.desired.generation,
                done.desired.change,
                total - late.len(),
                total,
                ms(done.skew()),
                ms(done.spread()),
                done.writes
            );
            if late.is_empty() {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "fleet {}: not applied within {}s by: {} (each fails its health path while behind; see turnout fleet status)",
                    target.fleet,
                    plan.apply_timeout.as_secs(),
                    late.join(", ")
                );
                ExitCode::from(4)
            }
        }
        Err(e) => failed(&target.fleet, &e),
    }
}

fn failed(fleet: &str, e: &FleetError) -> ExitCode {
    eprintln!("turnout fleet: fleet {fleet}: {e}");
    ExitCode::from(e.exit_code())
}

/// `turnout fleet status --etcd ...`: the desired state, the pending change and the lock, and
/// one line per member. Exit 0 when every member serves the desired generation, 1 when one is
/// behind (or none is there), and 1 when the store cannot be read.
async fn status(target: &Target, as_json: bool) -> ExitCode {
    let store = match target.connect().await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let read = match store.read().await {
        Ok(r) => r,
        Err(e) => return failed(&target.fleet, &e),
    };
    let Some(desired) = &read.desired else {
        return failed(
            &target.fleet,
            &FleetError::Empty {
                fleet: target.fleet.clone(),
            },
        );
    };
    let generation = desired.value.generation;
    let all_current = !read.members.is_empty()
        && read
            .members
            .iter()
            .all(|m| m.value.applied == generation && m.value.behind.is_none());
    if as_json {
        println!("{}", status_json(&read));
    } else {
        print!("{}", status_text(&target.fleet, &read));
    }
    if all_current {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn status_json(read: &FleetRead) -> serde_json::Value {
    let generation = read.desired.as_ref().map_or(0, |d| d.value.generation);
    json!({
        "revision": read.revision,
        "desired": read.desired.as_ref().map(|d| &d.value),
        "prepare": read.prepare.as_ref().map(|p| &p.value),
        "lock": read.lock.as_ref().map(|l| &l.value),
        "members": read.members.iter().map(|m| json!({
            "instance": m.value.instance,
            "admin": m.value.admin,
            "version": m.value.version,
            "applied": m.value.applied,
            "lag": generation.saturating_sub(m.value.applied),
            "behind": m.value.behind,
            "prepared": m.value.prepared,
        })).collect::<Vec<_>>(),
    })
}

fn status_text(fleet: &str, read: &FleetRead) -> String {
    let mut out = String::new();
    if let Some(d) = &read.desired {
        let d = &d.value;
        let weights: Vec<String> = d.weights.iter().map(|(p, w)| format!("{p}={w}")).collect();
        out.push_str(&format!(
            "fleet {fleet}: generation {} ({} by {}): {}; maintenance {}; {}\n",
            d.generation,
            d.change,
            d.by,
            weights.join(" "),
            if d.maintenance.is_some() { "on" } else { "off" },
            if d.paused { "paused" } else { "not paused" }
        ));
        if let Some(p) = &read.prepare {
            out.push_str(&format!(
                "prepared: generation {} ({}) by {}\n",
                p.value.next.generation, p.value.next.change, p.value.next.by
            ));
        }
        if let Some(l) = &read.lock {
            out.push_str(&format!("locked by {}\n", l.value));
        }
        out.push_str(&format!("{} member(s):\n", read.members.len()));
        for m in &read.members {
            let m = &m.value;
            let health = match &m.behind {
                Some(why) => format!("behind: {why}"),
                None if m.applied < d.generation => "applying".to_string(),
                None => "ok".to_string(),
            };
            out.push_str(&format!(
                "  {:<20} applied {:<6} lag {:<4} {:<8} {}  {}\n",
                m.instance,
                m.applied,
                d.generation.saturating_sub(m.applied),
                m.version,
                m.admin.as_deref().unwrap_or("-"),
                health
            ));
        }
    }
    out
}
