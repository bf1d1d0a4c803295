//! The in-process tier: the whole of turnout started with `turnout::run` in the test's own
//! runtime (see `inprocess/harness.rs`), real sockets on 127.0.0.1, and paused time where a
//! rule is about time: a 40-second wait is tested in milliseconds, exactly, with no sleep.
//!
//! - `serving`: start, forward, switch, and the drain `run` reports at shutdown.
//! - `switching`: the CLI's switch call against waits longer than its own admin timeout.

#[path = "inprocess/harness.rs"]
mod harness;
#[path = "inprocess/serving.rs"]
mod serving;
#[path = "inprocess/switching.rs"]
mod switching;
