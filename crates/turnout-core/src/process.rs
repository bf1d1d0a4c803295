//! Which generation of the turnout process this is: 1 when started, one more than the process
//! it took over from after an in-place upgrade. Like the pid, a fact of the whole process, set
//! once at start before anything reads it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// This process's generation.
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Relaxed)
}

/// Set at start by a process that took over from generation `n - 1`.
pub fn set_generation(n: u64) {
    GENERATION.store(n, Ordering::Relaxed);
}

/// Which instance this is, as `turnout status` shows it so an operator can tell instances
/// apart: `[server] name` (the host name unless set) and the addresses it listens on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Instance {
    /// `[server] name`, or the host name.
    pub name: String,
    /// The proxy's address.
    pub listen: String,
    /// The admin API's address.
    pub admin: String,
}

static INSTANCE: OnceLock<Instance> = OnceLock::new();

/// Set once, when the listeners are bound.
pub fn set_instance(instance: Instance) {
    let _ = INSTANCE.set(instance);
}

/// This instance, once its listeners are bound.
pub fn instance() -> Option<&'static Instance> {
    INSTANCE.get()
}
