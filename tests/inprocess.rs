//! The in-process tier: the whole of turnout started with `turnout::run` in the test's own
//! runtime (see `inprocess/harness.rs`), real sockets on 127.0.0.1, and paused time where a
//! rule is about time: a 40-second wait is tested in milliseconds, exactly, with no sleep.
//!
//! - `auth`: `[[auth]]`: basic, forward and ALB rules allow, refuse and fail closed; a
//!   preview's rule ends when its pool goes live.
//! - `bodies`: a request body that stops, a response body that stalls, one that flows.
//! - `compression`: `[compression]`: gzip, br, zstd by `Accept-Encoding`, what is left alone,
//!   streaming, cached assets' variants.
//! - `front_door`: `[limits]`: rates per client, the key behind a trusted proxy, dry-run, a
//!   pool's own budget, connections per client.
//! - `serving`: start, forward, switch, and the drain `run` reports at shutdown.
//! - `switching`: the CLI's switch call against waits longer than its own admin timeout.
//! - `timers`: the client idle timeout, the upstream idle timer, `hold_when_unavailable`, the
//!   passive ejections and their backoff.

#[path = "inprocess/auth.rs"]
mod auth;
#[path = "inprocess/bodies.rs"]
mod bodies;
#[path = "inprocess/compression.rs"]
mod compression;
#[path = "inprocess/front_door.rs"]
mod front_door;
#[path = "inprocess/harness.rs"]
mod harness;
#[path = "inprocess/serving.rs"]
mod serving;
#[path = "inprocess/switching.rs"]
mod switching;
#[path = "inprocess/timers.rs"]
mod timers;
