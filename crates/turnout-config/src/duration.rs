//! Durations written for people ("500ms", "30s", "2m", "1h 30m"), bounded, as every config
//! key and API field reads them.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// The longest duration any setting (or admin call) takes: a week. Longer ones are refused
/// where they are read, so no timer anywhere is handed a duration that overflows a clock.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Parses a duration written for people ("500ms", "30s", "2m", "1h 30m"), at most
/// [`MAX_DURATION`]; the error says what was wrong and how to write it.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d <= MAX_DURATION => Ok(d),
        Ok(_) => Err(format!(
            "duration {s:?} is too long: at most 7 days (\"7d\")"
        )),
        Err(e) => Err(format!(
            "invalid duration {s:?} ({e}): write it like \"500ms\", \"30s\" or \"2m\""
        )),
    }
}

/// A duration written for people: "500ms", "30s", "2m", "1h 30m".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration string such as \"500ms\", \"30s\" or \"2m\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<HumanDuration, E> {
                parse_duration(s).map(HumanDuration).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}
