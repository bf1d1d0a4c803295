//! The fuzzing tier for config parsing: property tests (proptest, stable Rust, a bounded number
//! of cases so CI time stays fixed). Whatever the text, parsing returns a config or an error
//! that names the file; it never panics, and every duration it accepts is within the bound.

use proptest::prelude::*;

use super::*;

const VALID: &str = "[server]\nlisten = \"127.0.0.1:8080\"\nclient_idle_timeout = \"75s\"\n\
                     [pools.blue]\nservers = [\"127.0.0.1:3000\"]\n[routing]\nactive = \"blue\"\n";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("fuzz.toml"))
}

fn names_the_file(e: &ConfigError) -> bool {
    e.to_string().contains("fuzz.toml")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_text_parses_or_is_refused_by_name(text in ".{0,400}") {
        if let Err(e) = parse(&text) {
            prop_assert!(names_the_file(&e), "{e}");
        }
    }

    /// A valid file with bytes changed, inserted or cut at random places.
    #[test]
    fn a_mutated_valid_file_never_panics(
        edits in proptest::collection::vec((0usize..200, any::<u8>(), 0u8..3), 1..8)
    ) {
        let mut bytes = VALID.as_bytes().to_vec();
        for (at, byte, how) in edits {
            let at = at % (bytes.len() + 1);
            match how {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ if at < bytes.len() => { bytes.remove(at); }
                _ => {}
            }
        }
        if let Ok(text) = String::from_utf8(bytes) {
            match parse(&text) {
                Ok(c) => prop_assert!(c.server.client_idle_timeout <= MAX_DURATION),
                Err(e) => prop_assert!(names_the_file(&e), "{e}"),
            }
        }
    }

    /// Every duration key: any number with any unit either loads within the bound or is refused
    /// naming the key's line.
    #[test]
    fn durations_load_within_the_bound(n in any::<u64>(), unit in "(ns|us|ms|s|m|h|d|w|y|years|)") {
        let text = VALID.replace("\"75s\"", &format!("\"{n}{unit}\""));
        match parse(&text) {
            Ok(c) => prop_assert!(c.server.client_idle_timeout <= MAX_DURATION),
            Err(e) => {
                let e = e.to_string();
                prop_assert!(e.contains("client_idle_timeout") || e.contains("line 3"), "{e}");
            }
        }
    }
}
