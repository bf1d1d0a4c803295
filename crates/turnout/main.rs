//! The `turnout` command: parses the command line and hands off to the library (`lib.rs`):
//! serving to `app`, the admin client to `client`, the demo to `demo`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use turnout::{app, client, demo, deploy, fleet, hash_password, rollout};

/// A reverse proxy for zero-downtime blue/green deploys: one fixed port for the load balancer,
/// pools behind it, and an admin API that switches the live pool atomically.
#[derive(Debug, Parser)]
#[command(name = "turnout", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy and its admin API.
    Serve {
        /// The TOML config file (see config/turnout.toml for every key).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Take the listening sockets over from the turnout whose upgrade socket this is, which
        /// then drains and exits (what `turnout upgrade` runs; by hand: a new container).
        #[arg(long, value_name = "SOCKET")]
        takeover: Option<PathBuf>,
    },
    /// Validate a config file (and the state file it names) without starting anything.
    Check {
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Print an argon2id hash of the password read from standard input (one line), for an
    /// `[[auth]]` users file (`user:HASH`). The password is never an argument: argv is
    /// visible to every local user.
    HashPassword,
    /// Try turnout: two demo apps (blue on :3000, green on :4000), the proxy on :8080 and the
    /// admin API on :9901, all on 127.0.0.1.
    Demo,
    /// Show the active pool, the generation and every pool's servers and in-flight requests.
    Status {
        #[command(flatten)]
        admin: client::AdminArgs,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make POOL the active pool: the next request goes there. Refused (exit 1) when a fresh
    /// probe finds no healthy server in POOL, unless --force.
    Switch {
        /// The pool to switch to, e.g. green.
        pool: String,
        #[command(flatten)]
        admin: client::AdminArgs,
        #[command(flatten)]
        options: client::SwitchArgs,
    },
    /// Switch back to the previous pool (health-gated like a switch).
    Rollback {
        #[command(flatten)]
        admin: client::AdminArgs,
        #[command(flatten)]
        options: client::SwitchArgs,
    },
    /// Share new clients between pools by weight (a canary): `turnout split blue=95 green=5`.
    /// Health-gated for the pools that gain share; clients keep their pool (sticky).
    Split {
        /// POOL=WEIGHT, one per pool; weights are whole numbers, 0 or more.
        #[arg(required = true, value_name = "POOL=WEIGHT", value_parser = client::parse_weight)]
        weights: Vec<(String, i64)>,
        #[command(flatten)]
        admin: client::AdminArgs,
        /// Split even if a pool that gains share fails its health probe.
        #[arg(long)]
        force: bool,
    },
    /// A guarded rollout: step POOL's share of new clients up (--steps 5,25,50,100), judge each
    /// step against the baseline on turnout's own counters (5xx rate, p95/p99 latency), and go
    /// back to the baseline at once when a check fails. Follows it to its end: exit 0 passed,
    /// 1 failed or aborted.
    Rollout {
        #[command(flatten)]
        args: rollout::RolloutArgs,
        #[command(flatten)]
        admin: client::AdminArgs,
    },
    /// Maintenance mode: `on` answers every request but the health path and [maintenance]'s
    /// allow-lists with 503 and the maintenance page; `off` ends it. Kept across restarts.
    Maintenance {
        state: client::OnOff,
        /// The message on the page ([maintenance] message unless given).
        #[arg(long)]
        message: Option<String>,
        #[command(flatten)]
        admin: client::AdminArgs,
    },
    /// Hold new requests (not the health path) without forwarding them, while requests in
    /// flight finish: restart the app, run a migration, switch, then `turnout resume`.
    Pause {
        /// The longest a request is held before it gets 503 ([pause] max_hold unless given).
        #[arg(long, value_name = "DURATION")]
        max_hold: Option<String>,
        #[command(flatten)]
        admin: client::AdminArgs,
    },
    /// Release the requests a pause holds, in the order they came.
    Resume {
        #[command(flatten)]
        admin: client::AdminArgs,
    },
    /// Upgrade turnout in place: the running turnout starts the new binary (its own path, or
    /// --binary), hands it the listening sockets and the state file, and drains. No connection
    /// is refused. Exit 0 once the new process serves; 1 if it failed (the old one serves on).
    Upgrade {
        /// The new binary (an absolute path); the one the running turnout was started from
        /// unless given.
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
        #[command(flatten)]
        admin: client::AdminArgs,
    },
    /// One deploy step: register the new version's servers in the idle POOL, wait for
    /// turnout's health checks to pass, switch to it (or --rollout), and wait for the old pool
    /// to drain. On any failure the pool that served before serves on.
    #[command(after_help = DEPLOY_EXIT_CODES)]
    Deploy {
        #[command(flatten)]
        args: deploy::DeployArgs,
        #[command(flatten)]
        admin: client::AdminArgs,
    },
    /// Reload the config file: the running turnout checks it (exit 1 naming what is wrong, and
    /// nothing changes) and hands over in place to a new process of the same binary that reads
    /// it; no connection is refused. Pools edited in the file take the file's servers; the
    /// others keep what was registered through the API. SIGHUP does the same.
    Reload {
        #[command(flatten)]
        admin: client::AdminArgs,
    },
    /// A pool's servers: `turnout pool set green 127.0.0.1:4000` registers the new version's
    /// servers (as PUT /v1/pools/NAME does); `turnout pool show green`; `turnout pool probe
    /// green` checks them now as a switch would (exit 0 healthy, 1 not, with the reason).
    Pool {
        #[command(subcommand)]
        command: client::PoolCommand,
    },
    /// Act on several instances together: a two-phase switch or rollback (all or none), or
    /// their status side by side.
    Fleet {
        #[command(subcommand)]
        command: fleet::FleetCommand,
    },
}

/// `turnout help deploy`'s closing lines: the exit codes, one meaning each.
const DEPLOY_EXIT_CODES: &str = "Exit codes:
  0   deployed: POOL takes every new client and the old pool drained (--no-switch: registered and healthy)
  1   refused by turnout (POOL serves traffic now, a server it cannot take, the health gate, a rollout under way)
  2   the admin API did not answer
  3   switched, but the old pool had not drained within --drain
  4   POOL's servers were not healthy within --wait-healthy; the old pool serves on
  5   the guarded rollout failed or was aborted; every client is back on the old pool
  64  usage: a bad flag, duration or missing argument; nothing was called";

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // clap gives every usage error exit 2, which the admin commands also give an
            // admin API that does not answer. `turnout deploy` keeps one meaning per code, so
            // its usage errors exit 64 (EX_USAGE); the other commands keep clap's 2.
            let deploy = std::env::args_os().nth(1).is_some_and(|a| a == "deploy");
            return match e.exit_code() {
                0 => ExitCode::SUCCESS,
                _ if deploy => ExitCode::from(deploy::code::USAGE),
                code => ExitCode::from(u8::try_from(code).unwrap_or(2)),
            };
        }
    };
    match cli.command {
        Command::Serve { config, takeover } => app::serve(&config, takeover.as_deref()),
        Command::Check { config } => app::check(&config),
        Command::Demo => demo::run(),
        Command::HashPassword => hash_password::run(),
        Command::Status { admin, json } => client::status(&admin, json),
        Command::Switch {
            pool,
            admin,
            options,
        } => client::switch(&admin, Some(&pool), &options),
        Command::Rollback { admin, options } => client::switch(&admin, None, &options),
        Command::Split {
            weights,
            admin,
            force,
        } => client::split(&admin, &weights, force),
        Command::Rollout { args, admin } => rollout::run(&admin, &args),
        Command::Maintenance {
            state,
            message,
            admin,
        } => client::maintenance(&admin, state, message.as_deref()),
        Command::Pause { max_hold, admin } => client::pause(&admin, max_hold.as_deref()),
        Command::Resume { admin } => client::resume(&admin),
        Command::Upgrade { binary, admin } => client::upgrade(&admin, binary.as_deref()),
        Command::Reload { admin } => client::reload(&admin),
        Command::Deploy { args, admin } => deploy::run(&admin, &args),
        Command::Pool { command } => client::pool(&command),
        Command::Fleet { command } => fleet::run(command),
    }
}
