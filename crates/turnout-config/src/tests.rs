//! Unit tests of parsing and validation, including the example files in `config/`.

use super::*;
use std::time::Duration;

const MINIMAL: &str = r#"
[server]
listen = "0.0.0.0:8080"
admin = "127.0.0.1:9901"
health_path = "/health-check"
[state]
file = "/var/lib/turnout/state.json"
[pools.blue]
servers = ["127.0.0.1:3000"]
[pools.green]
servers = ["127.0.0.1:4000"]
[routing]
active = "blue"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("test.toml"))
}

fn err(text: &str) -> String {
    parse(text).expect_err("config must be refused").to_string()
}

#[test]
fn minimal_config_from_the_issue() {
    let c = parse(MINIMAL).expect("valid");
    assert_eq!(c.server.listen, "0.0.0.0:8080".parse().expect("addr"));
    assert_eq!(c.server.health_path, "/health-check");
    assert_eq!(c.routing.active.as_str(), "blue");
    assert_eq!(c.pools.len(), 2);
    assert_eq!(c.pools["green"][0].addr.as_str(), "127.0.0.1:4000");
    assert_eq!(c.server.shutdown_delay, defaults::SHUTDOWN_DELAY);
    assert_eq!(
        c.state.file.as_deref(),
        Some(Path::new("/var/lib/turnout/state.json"))
    );
}

#[test]
fn example_files_parse() {
    for (name, text) in [
        ("turnout.toml", include_str!("../../../config/turnout.toml")),
        ("minimal.toml", include_str!("../../../config/minimal.toml")),
    ] {
        if let Err(e) = Config::parse(text, Path::new(name)) {
            panic!("config/{name} does not parse: {e}");
        }
    }
}

#[test]
fn durations_are_human() {
    let c = parse(&MINIMAL.replace(
        "[state]",
        "shutdown_delay = \"500ms\"\nshutdown_timeout = \"2m\"\n[state]",
    ))
    .expect("valid");
    assert_eq!(c.server.shutdown_delay, Duration::from_millis(500));
    assert_eq!(c.server.shutdown_timeout, Duration::from_secs(120));

    let e = err(&MINIMAL.replace("[state]", "shutdown_delay = \"5 parsecs\"\n[state]"));
    assert!(e.contains("line 6"), "{e}");
    assert!(e.contains("5 parsecs"), "{e}");
}

#[test]
fn rollout_policy_comes_from_its_table_and_bad_fields_are_named() {
    let c = parse(&format!(
        "{MINIMAL}\n[rollout]\nsteps = [10, 100]\nbake = \"30s\"\nmax_error_rate = 0.02\n"
    ))
    .expect("valid");
    assert_eq!(c.rollout.steps, vec![10, 100]);
    assert_eq!(c.rollout.bake, Duration::from_secs(30));
    assert_eq!(c.rollout.max_error_rate, 0.02);
    assert_eq!(c.rollout.min_requests, 100, "the default");
    assert_eq!(
        parse(MINIMAL).expect("valid").rollout.steps,
        vec![5, 25, 50, 100]
    );
    let e = err(&format!(
        "{MINIMAL}\n[rollout]\nbake = \"1m\"\nsteps = [5, 50]\n"
    ));
    assert!(e.contains("rollout.steps") && e.contains("line 17"), "{e}");
    assert!(e.contains("must end at 100"), "{e}");
    let e = err(&format!("{MINIMAL}\n[rollout]\nmax_p99_ratio = 0.5\n"));
    assert!(e.contains("rollout.max_p99_ratio"), "{e}");
    let e = err(&format!("{MINIMAL}\n[rollout]\nstep = [5, 100]\n"));
    assert!(e.contains("step"), "{e}");
}

#[test]
fn unknown_key_names_key_and_line() {
    let e = err(&MINIMAL.replace("[state]", "listne = \"0.0.0.0:1\"\n[state]"));
    assert!(e.contains("listne"), "{e}");
    assert!(e.contains("line 6"), "{e}");
}

#[test]
fn bad_listen_address_names_value_and_line() {
    let e = err(&MINIMAL.replace("0.0.0.0:8080", "0.0.0.0:80800"));
    assert!(e.contains("0.0.0.0:80800"), "{e}");
    assert!(e.contains("line 3"), "{e}");
}

#[test]
fn bad_server_address_names_value_key_and_line() {
    let e = err(&MINIMAL.replace("127.0.0.1:4000", "127.0.0.1"));
    assert!(e.contains("line 11"), "{e}");
    assert!(e.contains("pools.green.servers"), "{e}");
    assert!(e.contains("port is missing"), "{e}");
}

#[test]
fn unknown_active_pool_names_it_and_the_line() {
    let e = err(&MINIMAL.replace("active = \"blue\"", "active = \"purple\""));
    assert!(e.contains("line 13"), "{e}");
    assert!(e.contains("routing.active"), "{e}");
    assert!(e.contains("purple"), "{e}");
    assert!(e.contains("blue, green"), "{e}");
}

#[test]
fn empty_active_pool_is_refused() {
    let e = err(&MINIMAL.replace("[\"127.0.0.1:3000\"]", "[]"));
    assert!(e.contains("no servers"), "{e}");
}

#[test]
fn missing_routing_and_pools_are_named() {
    assert!(err("[pools.blue]\nservers=[\"127.0.0.1:1\"]\n").contains("routing.active"));
    assert!(err("[routing]\nactive=\"blue\"\n").contains("no pool is defined"));
}

#[test]
fn bad_pool_name_and_health_path() {
    let e = err(&MINIMAL.replace("[pools.green]", "[pools.\"gr een\"]"));
    assert!(e.contains("invalid pool name"), "{e}");
    let e = err(&MINIMAL.replace("\"/health-check\"", "\"health\""));
    assert!(
        e.contains("server.health_path") && e.contains("line 5"),
        "{e}"
    );
}

#[test]
fn server_addr_rules() {
    for ok in [
        "127.0.0.1:3000",
        "app-green:8080",
        "[::1]:80",
        "http://10.0.0.1:80/",
    ] {
        assert!(ServerAddr::parse(ok).is_ok(), "{ok}");
    }
    assert_eq!(
        ServerAddr::parse("http://10.0.0.1:80/")
            .expect("ok")
            .as_str(),
        "10.0.0.1:80"
    );
    for bad in [
        "",
        "host",
        "host:0",
        "host:99999",
        ":80",
        "a b:80",
        "[zz]:80",
        "https://x",
        "x:443/api",
    ] {
        assert!(ServerAddr::parse(bad).is_err(), "{bad}");
    }
    let tls = ServerAddr::parse("https://app.internal:8443/").expect("ok");
    assert_eq!(tls.as_str(), "https://app.internal:8443");
    assert_eq!(tls.authority(), "app.internal:8443");
    assert!(tls.is_tls());
    let plain = ServerAddr::parse("10.0.0.1:80").expect("ok");
    assert_eq!(plain.authority(), "10.0.0.1:80");
    assert!(!plain.is_tls());
}

#[test]
fn health_defaults_and_pool_overrides() {
    let c = parse(MINIMAL).expect("valid");
    assert!(c.health.enabled);
    assert_eq!(c.health.path, "/");
    assert_eq!(c.health.expect_status, StatusRange { min: 200, max: 299 });
    assert!(c.pool_health.is_empty());
    assert!(c.passive.enabled);
    assert_eq!(c.server.client_idle_timeout, defaults::CLIENT_IDLE_TIMEOUT);

    let text = format!(
        "{MINIMAL}\n[health]\npath = \"/health\"\ninterval = \"500ms\"\nexpect_status = \"200-399\"\n\
         [health.passive]\nfailures = 2\n[pools.green.health]\npath = \"/actuator/health\"\nunhealthy_threshold = 4\n"
    );
    let c = parse(&text).expect("valid");
    assert_eq!(c.health.path, "/health");
    assert_eq!(c.health.interval, Duration::from_millis(500));
    assert!(c.health.expect_status.contains(302));
    assert_eq!(c.passive.failures, 2);
    let green = &c.pool_health["green"];
    assert_eq!(green.path, "/actuator/health");
    assert_eq!(green.unhealthy_threshold, 4);
    assert_eq!(
        green.interval,
        Duration::from_millis(500),
        "inherited from [health]"
    );
    assert!(!c.pool_health.contains_key("blue"));
}

#[test]
fn bad_health_settings_name_key_and_line() {
    let e = err(&format!("{MINIMAL}[health]\nexpect_status = \"2xy\"\n"));
    assert!(
        e.contains("health.expect_status") && e.contains("line 15"),
        "{e}"
    );
    let e = err(&format!(
        "{MINIMAL}[pools.blue.health]\nhealthy_threshold = 0\n"
    ));
    assert!(
        e.contains("pools.blue.health.healthy_threshold") && e.contains("at least 1"),
        "{e}"
    );
    let e = err(&format!("{MINIMAL}[health]\npath = \"health\"\n"));
    assert!(e.contains("health.path"), "{e}");
    let e = err(&format!(
        "{MINIMAL}[health.passive]\nejection = \"10s\"\nmax_ejection = \"5s\"\n"
    ));
    assert!(e.contains("health.passive.max_ejection"), "{e}");
    let e = err(&format!("{MINIMAL}[health]\nintervall = \"1s\"\n"));
    assert!(e.contains("intervall"), "{e}");
    let e = err(&MINIMAL.replace("[state]", "max_header_bytes = 100\n[state]"));
    assert!(e.contains("server.max_header_bytes"), "{e}");
}

#[test]
fn status_ranges() {
    assert_eq!(
        StatusRange::parse("2xx"),
        Ok(StatusRange { min: 200, max: 299 })
    );
    assert_eq!(
        StatusRange::parse("204"),
        Ok(StatusRange { min: 204, max: 204 })
    );
    assert_eq!(
        StatusRange::parse("200-399"),
        Ok(StatusRange { min: 200, max: 399 })
    );
    for bad in ["", "2x", "99", "600", "300-200", "abc", "9xx"] {
        assert!(StatusRange::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn routing_keys_are_validated_with_their_line() {
    let c = parse(&format!(
        "{MINIMAL}sticky = \"header\"\nsticky_header = \"X-User-Id\"\ntrusted_proxies = [\"10.0.0.0/16\", \"10.1.0.7\"]\n\
         preview_header = \"X-Turnout-Pool\"\npreview_token = \"t\"\n\
         [[routing.rules]]\nquery = \"beta\"\nprefix = \"y\"\nto = \"green\"\n"
    ))
    .expect("valid");
    assert_eq!(c.routing.sticky, Sticky::Header("x-user-id".into()));
    assert!(c
        .routing
        .trusted_proxies
        .contains(&"10.0.200.1".parse().expect("ip")));
    assert_eq!(
        c.routing.preview.as_ref().map(|p| p.cookie.as_str()),
        Some("turnout-preview")
    );
    assert_eq!(c.routing.rules.len(), 1);
    for (extra, says) in [
        ("sticky = \"session\"", "line 14"),
        ("sticky = \"header\"", "needs sticky_header"),
        ("sticky_cookie = \"a b\"", "not a valid cookie name"),
        ("trusted_proxies = [\"10.0.0.0/40\"]", "line 14"),
        ("preview_token = \"x\"", "need preview_header"),
        (
            "[[routing.rules]]\nheader = \"x\"\nequals = \"1\"\nto = \"purple\"",
            "no pool named \"purple\"",
        ),
        (
            "[[routing.rules]]\nheader = \"x\"\nto = \"green\"",
            "rules[0]",
        ),
        (
            "[[routing.rules]]\nheader = \"x\"\nequals = \"1\"\nto = \"green\"\nwhen = 1",
            "unknown field `when`",
        ),
    ] {
        let e = err(&format!("{MINIMAL}{extra}\n"));
        assert!(e.contains(says), "{extra}: {e}");
    }
}

#[test]
fn weighted_servers_and_balancers() {
    let c = parse(&MINIMAL.replace(
        "servers = [\"127.0.0.1:4000\"]",
        "balance = \"least_requests\"\nservers = [\"127.0.0.1:4000\", { addr = \"127.0.0.1:4001\", weight = 3 }]",
    ))
    .expect("valid");
    assert_eq!(c.pool_balance["green"], Balance::LeastRequests);
    assert_eq!(c.pools["green"][1].weight, 3);
    assert!(!c.pool_balance.contains_key("blue"));
    for (replace, says) in [
        (
            "balance = \"fastest\"\nservers = [\"127.0.0.1:4000\"]",
            "unknown balance \"fastest\"",
        ),
        (
            "servers = [{ addr = \"127.0.0.1:4000\", weight = 2 }]",
            "balance = \"weighted\"",
        ),
        (
            "balance = \"weighted\"\nservers = [{ addr = \"127.0.0.1:4000\", weight = 0 }]",
            "out of range",
        ),
        (
            "servers = [{ adr = \"127.0.0.1:4000\" }]",
            "unknown field `adr`",
        ),
    ] {
        let e = err(&MINIMAL.replace("servers = [\"127.0.0.1:4000\"]", replace));
        assert!(e.contains(says) && e.contains("line 1"), "{replace}: {e}");
    }
}

#[test]
fn static_dirs_and_cache_sizes_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().display().to_string();
    let c = parse(&format!(
        "[[static]]\nprefix = \"/static/\"\nroot = {root:?}\nindex = \"index.html\"\n\
         [cache]\nprefixes = [\"/assets/\"]\nmax_bytes = \"1MiB\"\nmax_object = \"8KiB\"\n{MINIMAL}"
    ))
    .expect("valid");
    assert_eq!(
        c.statics[0].root,
        std::fs::canonicalize(dir.path()).expect("canonical")
    );
    assert_eq!((c.cache.max_bytes, c.cache.max_object), (1024 * 1024, 8192));
    assert_eq!(parse(MINIMAL).expect("valid").cache, Cache::default());
    for (text, says) in [
        (
            format!("[[static]]\nprefix = \"static\"\nroot = {root:?}\n"),
            "line 2",
        ),
        (
            "[[static]]\nprefix = \"/s/\"\nroot = \"/no/such/dir\"\n".to_owned(),
            "/no/such/dir is not a directory",
        ),
        (
            format!("[[static]]\nprefix = \"/s/\"\nroot = {root:?}\nindex = \"../x\"\n"),
            "must be a file name",
        ),
        (
            format!("[[static]]\nprefix = \"/s/\"\nroot = {root:?}\ntypo = 1\n"),
            "unknown field `typo`",
        ),
        (
            "[cache]\nmax_bytes = \"lots\"\n".to_owned(),
            "invalid size \"lots\"",
        ),
        (
            "[cache]\nmax_bytes = \"1KiB\"\nmax_object = \"1MiB\"\n".to_owned(),
            "must not be more than max_bytes",
        ),
        (
            "[cache]\nprefixes = [\"assets\"]\n".to_owned(),
            "cache.prefixes",
        ),
    ] {
        let e = err(&format!("{text}{MINIMAL}"));
        assert!(e.contains(says), "{text}: {e}");
    }
}

#[test]
fn tls_listener_certs_redirect_and_pool_cas() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "pem").expect("write");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:8080\"\nredirect_https = true\n\
         [tls]\nlisten = \"127.0.0.1:8443\"\nwatch = true\nhandshake_timeout = \"3s\"\n\
         [[tls.certs]]\ncert = \"a.pem\"\nkey = \"a.key\"\n[[tls.certs]]\ncert = \"b.pem\"\nkey = \"b.key\"\n\
         [pools.blue]\nservers = [\"https://127.0.0.1:9443\"]\n[pools.blue.tls]\nca = {ca:?}\n\
         [routing]\nactive = \"blue\"\n"
    );
    let c = parse(&text).expect("valid");
    let tls = c.tls.expect("tls");
    assert_eq!(tls.listen.port(), 8443);
    assert_eq!(tls.certs.len(), 2);
    assert_eq!(tls.certs[1].key, std::path::PathBuf::from("b.key"));
    assert!(tls.watch && !tls.reject_expired);
    assert_eq!(tls.handshake_timeout, Duration::from_secs(3));
    assert_eq!(tls.max_handshakes, defaults::TLS_MAX_HANDSHAKES);
    assert!(c.server.redirect_https);
    assert_eq!(c.pool_ca["blue"], ca);
    assert!(c.pools["blue"][0].addr.is_tls());

    // Each mistake names its key and the line it is on.
    let minimal_redirect = MINIMAL.replace("[server]\n", "[server]\nredirect_https = true\n");
    let cases = [
        (minimal_redirect, "server.redirect_https", "redirect_https"),
        (format!("{MINIMAL}[tls]\nlisten = \"127.0.0.1:8443\"\n"), "tls.certs", "[tls]"),
        (
            format!("{MINIMAL}[tls]\nmax_handshakes = 0\n[[tls.certs]]\ncert = \"a\"\nkey = \"b\"\n"),
            "tls.max_handshakes",
            "max_handshakes",
        ),
        (
            format!("{MINIMAL}[tls]\nlisten = \"0.0.0.0:8080\"\n[[tls.certs]]\ncert = \"a\"\nkey = \"b\"\n"),
            "tls.listen",
            "listen = \"0.0.0.0:8080\"\n[[",
        ),
        (
            format!("{MINIMAL}[pools.blue.tls]\nca = \"/nonexistent/ca.pem\"\n"),
            "pools.blue.tls.ca",
            "ca = ",
        ),
    ];
    for (text, key, marker) in cases {
        let line = text[..text.find(marker).expect("marker")]
            .matches('\n')
            .count()
            + 1;
        let err = parse(&text).expect_err(key).to_string();
        assert!(err.contains(key), "{key}: {err}");
        assert!(
            err.contains(&format!("line {line}")),
            "{key} line {line}: {err}"
        );
    }
    let err = parse(&format!("[tls]\ncertz = 1\n{MINIMAL}")).expect_err("unknown key");
    assert!(err.to_string().contains("certz"), "{err}");
}

#[test]
fn health_checks_take_a_host_headers_a_port_and_a_gate() {
    let c = parse(&format!(
        "{MINIMAL}[health]\nhost = \"app.internal\"\nheaders = {{ x-token = \"s3cret\" }}\nport = 9000\ngate = \"50%\"\n[pools.green.health]\ngate = \"all\"\n"
    ))
    .expect("valid");
    assert_eq!(c.health.host.as_deref(), Some("app.internal"));
    assert_eq!(c.health.headers, vec![("x-token".into(), "s3cret".into())]);
    assert_eq!(c.health.port, Some(9000));
    assert_eq!(c.health.gate, Gate::Percent(50));
    let green = &c.pool_health[&PoolName::parse("green").expect("name")];
    assert_eq!(
        (green.gate, green.host.as_deref()),
        (Gate::All, Some("app.internal"))
    );
    assert_eq!(Gate::Percent(50).needed(3), 2);
    assert_eq!(Gate::Percent(1).needed(3), 1);
    assert_eq!(Gate::All.needed(4), 4);
    assert_eq!(Gate::One.needed(0), 0);

    let e = err(&format!("{MINIMAL}[health]\ngate = \"most\"\n"));
    assert!(e.contains("health.gate") && e.contains("line 15"), "{e}");
    let e = err(&format!("{MINIMAL}[health]\ngate = \"0%\"\n"));
    assert!(e.contains("health.gate"), "{e}");
    let e = err(&format!("{MINIMAL}[health]\nhost = \"a b\"\n"));
    assert!(e.contains("health.host"), "{e}");
    let e = err(&format!(
        "{MINIMAL}[health]\nheaders = {{ \"bad header\" = \"x\" }}\n"
    ));
    assert!(
        e.contains("health.headers") && e.contains("bad header"),
        "{e}"
    );
    let e = err(&format!(
        "{MINIMAL}[health]\nheaders = {{ host = \"x\" }}\n"
    ));
    assert!(e.contains("`host`"), "{e}");
    let e = err(&format!("{MINIMAL}[health]\nport = 0\n"));
    assert!(e.contains("health.port"), "{e}");
}

#[test]
fn maintenance_pause_and_error_pages_are_validated() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("503.html"), "<p>{{message}}</p>").expect("write");
    let c = parse(&format!(
        "{MINIMAL}[maintenance]\nmessage = \"m\"\nretry_after = \"5m\"\nallow_paths = [\"/ops/\"]\nallow_ips = [\"10.0.0.0/8\"]\nhealth = \"fail\"\n\
         [pause]\nmax_hold = \"10s\"\nmax_requests = 50\nmax_bytes = \"1MiB\"\n[errors]\ndir = {:?}\n",
        dir.path().display().to_string()
    ))
    .expect("valid");
    assert_eq!(c.maintenance.message, "m");
    assert_eq!(c.maintenance.retry_after, Duration::from_secs(300));
    assert!(c.maintenance.health_fails);
    assert!(c
        .maintenance
        .allow_ips
        .contains(&"10.1.2.3".parse().expect("ip")));
    assert_eq!(c.pause.max_requests, 50);
    assert_eq!(c.pause.max_bytes, 1024 * 1024);
    assert_eq!(
        c.error_pages.pages,
        vec![(503, "<p>{{message}}</p>".to_owned())]
    );
    let d = parse(MINIMAL).expect("valid");
    assert_eq!(d.pause, PausePolicy::default());
    assert!(!d.maintenance.health_fails && d.server.request_id);
    assert_eq!(d.upstream.hold_when_unavailable, None);

    for (extra, key) in [
        ("[maintenance]\nhealth = \"maybe\"\n", "maintenance.health"),
        (
            "[maintenance]\nallow_paths = [\"ops\"]\n",
            "maintenance.allow_paths",
        ),
        (
            "[maintenance]\nallow_ips = [\"ten\"]\n",
            "maintenance.allow_ips",
        ),
        ("[pause]\nmax_requests = 0\n", "pause.max_requests"),
        ("[pause]\nmax_hold = \"0s\"\n", "pause.max_hold"),
        ("[pause]\nmax_bytes = \"lots\"\n", "pause.max_bytes"),
        ("[errors]\ndir = \"/no/such/dir\"\n", "errors.dir"),
        (
            "[server]\nmax_request_body = \"big\"\n",
            "server.max_request_body",
        ),
        ("[pause]\nmax_per_client = 0\n", "pause.max_per_client"),
        (
            "[server]\nupgrade_binaries = [\"turnout-next\"]\n",
            "server.upgrade_binaries",
        ),
        ("[server]\nname = \"two words\"\n", "server.name"),
        ("[server]\nname = \"\"\n", "server.name"),
    ] {
        let text = if extra.starts_with("[server]") {
            MINIMAL.replace("[state]", &format!("{}\n[state]", &extra[9..]))
        } else {
            format!("{MINIMAL}{extra}")
        };
        let e = err(&text);
        assert!(e.contains(key), "{key}: {e}");
    }
}

#[test]
fn skew_protection_needs_asset_prefixes() {
    let on = MINIMAL.replace(
        "active = \"blue\"",
        "active = \"blue\"\nskew_protection = \"6h\"",
    );
    let e = err(&on);
    assert!(
        e.contains("routing.skew_protection") && e.contains("skew_prefixes"),
        "{e}"
    );
    let c = parse(&format!("{on}[cache]\nprefixes = [\"/assets/\"]\n")).expect("valid");
    assert_eq!(
        c.routing.skew_protection,
        Some(Duration::from_secs(6 * 3600))
    );
    let c = parse(&on.replace(
        "skew_protection",
        "skew_prefixes = [\"/_next/static/\"]\nskew_protection",
    ))
    .expect("valid");
    assert_eq!(c.routing.skew_prefixes, ["/_next/static/"]);
    let e = err(&on.replace(
        "skew_protection",
        "skew_prefixes = [\"_next\"]\nskew_protection",
    ));
    assert!(e.contains("routing.skew_prefixes"), "{e}");
}

#[test]
fn fleet_section_defaults_and_values() {
    assert!(parse(MINIMAL).expect("valid").fleet.is_none());
    let c = parse(&format!(
        "{MINIMAL}\n[fleet]\nname = \"shop\"\netcd = [\"http://127.0.0.1:2379\", \"http://127.0.0.2:2379\"]\n"
    ))
    .expect("valid");
    let f = c.fleet.expect("[fleet]");
    assert_eq!(f.name, "shop");
    assert_eq!(f.instance, None);
    assert_eq!(f.etcd.len(), 2);
    assert_eq!(f.lease_ttl, defaults::FLEET_LEASE_TTL);
    assert_eq!(f.join_timeout, defaults::FLEET_JOIN_TIMEOUT);
    let c = parse(&format!(
        "{MINIMAL}\n[fleet]\nname = \"shop\"\ninstance = \"web-1\"\netcd = [\"https://etcd:2379\"]\nlease_ttl = \"3s\"\n[fleet.tls]\nca = \"/etc/ca.pem\"\ncert = \"/etc/c.pem\"\nkey = \"/etc/k.pem\"\n"
    ))
    .expect("valid");
    let f = c.fleet.expect("[fleet]");
    assert_eq!(f.instance.as_deref(), Some("web-1"));
    assert_eq!(f.lease_ttl, Duration::from_secs(3));
    let tls = f.tls.expect("[fleet.tls]");
    assert!(tls.identity.is_some());
}

#[test]
fn fleet_section_misuse_names_the_key_and_line() {
    let with = |body: &str| err(&format!("{MINIMAL}\n[fleet]\n{body}"));
    let e = with("name = \"../etc\"\netcd = [\"http://127.0.0.1:2379\"]\n");
    assert!(e.contains("fleet.name") && e.contains("../etc"), "{e}");
    assert!(e.contains("line 16"), "{e}");
    let e = with(&format!(
        "name = \"{}\"\netcd = [\"http://127.0.0.1:2379\"]\n",
        "a".repeat(65)
    ));
    assert!(e.contains("fleet.name"), "{e}");
    let e = with("name = \"shop\"\ninstance = \"a/b\"\netcd = [\"http://127.0.0.1:2379\"]\n");
    assert!(e.contains("fleet.instance"), "{e}");
    let e = with("name = \"shop\"\netcd = []\n");
    assert!(
        e.contains("fleet.etcd") && e.contains("at least one"),
        "{e}"
    );
    let e = with("name = \"shop\"\netcd = [\"127.0.0.1:2379\"]\n");
    assert!(
        e.contains("fleet.etcd") && e.contains("http://HOST:PORT"),
        "{e}"
    );
    let e = with("name = \"shop\"\netcd = [\"https://127.0.0.1:2379\"]\n");
    assert!(e.contains("needs [fleet.tls]"), "{e}");
    let e = with("name = \"shop\"\netcd = [\"http://127.0.0.1:2379/v3?x\"]\n");
    assert!(e.contains("fleet.etcd"), "{e}");
    let e = with("name = \"shop\"\netcd = [\"http://127.0.0.1:2379\"]\nlease_ttl = \"1s\"\n");
    assert!(
        e.contains("fleet.lease_ttl") && e.contains("at least 2s"),
        "{e}"
    );
    let e = with("name = \"shop\"\netcd = [\"http://127.0.0.1:2379\"]\nlease_ttl = \"2500ms\"\n");
    assert!(e.contains("whole seconds"), "{e}");
    let e = with("name = \"shop\"\netcd = [\"http://127.0.0.1:2379\"]\npassword = \"x\"\n");
    assert!(e.contains("password"), "{e}");
    let e = with(
        "name = \"shop\"\netcd = [\"https://e:2379\"]\n[fleet.tls]\nca = \"/ca\"\ncert = \"/c\"\n",
    );
    assert!(e.contains("fleet.tls.cert") && e.contains("both"), "{e}");
    let e = with("etcd = [\"http://127.0.0.1:2379\"]\n");
    assert!(e.contains("name"), "{e}");
}

#[test]
fn limits_are_read_and_misuse_names_the_key_and_line() {
    let c = parse(&format!(
        "{MINIMAL}\n[limits]\nallow = [\"10.0.0.0/8\"]\nrequests_per_client = 4\n[[limits.rate]]\nname = \"login\"\nby = \"header:X-Api-Key\"\nrate = \"5/m\"\npath_prefix = \"/login\"\npool = \"green\"\n"
    ))
    .expect("valid");
    let r = &c.limits.rates[0];
    assert_eq!(
        (r.rate.get(), r.per, r.burst.get()),
        (5, Duration::from_secs(60), 5)
    );
    assert_eq!(
        r.key,
        LimitKey::Header(http::HeaderName::from_static("x-api-key"))
    );
    assert_eq!(r.pool.as_ref().map(PoolName::as_str), Some("green"));
    assert_eq!(c.limits.requests_per_client, Some(4));
    assert!(c.limits.allow.contains(&"10.1.2.3".parse().expect("ip")));

    for (bad, key, says) in [
        ("rate = \"5 per second\"", "limits.rate.rate", "\"10/s\""),
        ("rate = \"0/s\"", "limits.rate.rate", "\"10/s\""),
        (
            "rate = \"5/s\"\nby = \"cookie:x\"",
            "limits.rate.by",
            "header:NAME",
        ),
        (
            "rate = \"5/s\"\nby = \"header:bad header\"",
            "limits.rate.by",
            "header:NAME",
        ),
        (
            "rate = \"5/s\"\npool = \"purple\"",
            "limits.rate.pool",
            "purple",
        ),
        (
            "rate = \"5/s\"\npath_prefix = \"login\"",
            "limits.rate.path_prefix",
            "start with",
        ),
        (
            "rate = \"5/s\"\nburst = 0",
            "limits.rate.burst",
            "at least 1",
        ),
        ("rate = \"5/s\"\nrate_per = 3", "rate_per", "unknown field"),
    ] {
        let text = format!("{MINIMAL}\n[[limits.rate]]\nname = \"r\"\n{bad}\n");
        let e = err(&text);
        assert!(e.contains(key) && e.contains(says), "{bad}: {e}");
        // The line the offending key is written on.
        let written = key.rsplit('.').next().expect("a key");
        let at = text.rfind(&format!("{written} =")).expect("written");
        let line = text[..at].matches('\n').count() + 1;
        assert!(
            e.contains(&format!("line {line}")),
            "{bad}: line {line}: {e}"
        );
    }
    let e = err(&format!(
        "{MINIMAL}\n[[limits.rate]]\nname = \"a b\"\nrate = \"1/s\"\n"
    ));
    assert!(
        e.contains("limits.rate.name") && e.contains("line 16"),
        "{e}"
    );
    let e = err(&format!(
        "{MINIMAL}\n[[limits.rate]]\nname = \"a\"\nrate = \"1/s\"\n[[limits.rate]]\nname = \"a\"\nrate = \"2/s\"\n"
    ));
    assert!(e.contains("names two rates"), "{e}");
    let e = err(&format!(
        "{MINIMAL}\n[limits]\nconnections_per_client = 0\n"
    ));
    assert!(
        e.contains("limits.connections_per_client") && e.contains("line 16"),
        "{e}"
    );
    let e = err(&format!("{MINIMAL}\n[limits]\nallow = [\"10.0.0.0/33\"]\n"));
    assert!(
        e.contains("limits.allow") && e.contains("10.0.0.0/33"),
        "{e}"
    );
    let e = err(&format!("{MINIMAL}\n[limits]\ndivide_by_fleet = true\n"));
    assert!(e.contains("needs a [fleet]"), "{e}");
}

#[test]
fn compression_is_read_and_misuse_names_the_key_and_line() {
    use crate::compression::Encoding;
    let c = parse(&format!(
        "{MINIMAL}\n[compression]\nencodings = [\"gzip\", \"br\"]\ntypes = [\"Application/JSON\", \"text/*\"]\nmin_size = \"2KiB\"\n"
    ))
    .expect("valid");
    let z = c.compression.expect("[compression] is on");
    assert_eq!(z.encodings, vec![Encoding::Gzip, Encoding::Brotli]);
    assert_eq!(z.types, vec!["application/json", "text/*"]);
    assert_eq!(z.min_size, 2048);
    let d = parse(&format!("{MINIMAL}\n[compression]\n"))
        .expect("valid")
        .compression
        .expect("on");
    assert_eq!(d.encodings.len(), 3);
    assert_eq!(d.min_size, crate::defaults::COMPRESSION_MIN_SIZE);
    assert!(parse(MINIMAL).expect("valid").compression.is_none());

    for (bad, key, says) in [
        (
            "encodings = [\"deflate\"]",
            "compression.encodings",
            "deflate",
        ),
        (
            "encodings = [\"br\", \"br\"]",
            "compression.encodings",
            "twice",
        ),
        ("encodings = []", "compression.encodings", "lists nothing"),
        ("types = [\"json\"]", "compression.types", "media type"),
        ("types = [\"*/*\"]", "compression.types", "media type"),
        (
            "types = [\"text/html; charset=utf-8\"]",
            "compression.types",
            "media type",
        ),
        (
            "types = [\"text/event-stream\"]",
            "compression.types",
            "never compressed",
        ),
        ("min_size = \"a lot\"", "compression.min_size", "a lot"),
        ("level = 9", "level", "unknown field"),
    ] {
        let text = format!("{MINIMAL}\n[compression]\n{bad}\n");
        let e = err(&text);
        assert!(e.contains(key) && e.contains(says), "{bad}: {e}");
        let line = MINIMAL.matches('\n').count() + 3;
        assert!(
            e.contains(&format!("line {line}")),
            "{bad}: line {line}: {e}"
        );
    }
}

#[test]
fn auth_rules_are_read_and_misuse_names_the_key_the_line_and_the_file() {
    use crate::AuthCheck;
    let dir = tempfile::tempdir().expect("dir");
    let users = dir.path().join("users");
    let bcrypt = "$2b$04$abcdefghijklmnopqrstuu5zEoOgqyhWdRNUdPYBRxIZhYyrkHW0u";
    let argon = "$argon2id$v=19$m=1024,t=1,p=1$c2l4dGVlbiBieXRlIHNhbA$n0QSs0dfIRT2t4NqE5g+6e2wTUW1lDJ0CO2d0D6uoCk";
    std::fs::write(&users, format!("# testers\nann:{bcrypt}\n\nbob:{argon}\n")).expect("write");
    let users = users.display().to_string();
    let c = parse(&format!(
        "{MINIMAL}\n[[auth]]\nname = \"preview\"\nkind = \"basic\"\nusers_file = {users:?}\npool = \"green\"\nuser_header = \"X-Auth-User\"\n\
         [[auth]]\nname = \"sso\"\nkind = \"forward\"\nurl = \"http://127.0.0.1:9000/check\"\ncopy_headers = [\"X-User\"]\nhost = \"Shop.Example\"\n\
         [[auth]]\nname = \"alb\"\nkind = \"alb\"\nkeys_url = \"https://public-keys.auth.elb.eu-west-1.amazonaws.com/\"\nsigner = \"arn:aws:elasticloadbalancing:eu-west-1:1:loadbalancer/app/x/y\"\npath_prefix = \"/admin\"\n"
    ))
    .expect("valid");
    assert_eq!(c.auth.len(), 3);
    assert!(
        c.auth[0].until_live,
        "a pool's rule ends when it goes live unless told"
    );
    match &c.auth[0].check {
        AuthCheck::Basic { users, realm, .. } => {
            assert_eq!(users.len(), 2);
            assert_eq!(realm, "preview");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.auth[1].host.as_deref(), Some("shop.example"));
    match &c.auth[2].check {
        AuthCheck::Alb {
            keys_url, claims, ..
        } => {
            assert_eq!(
                keys_url,
                "https://public-keys.auth.elb.eu-west-1.amazonaws.com"
            );
            assert_eq!(claims.len(), 2, "sub and email by default");
        }
        other => panic!("{other:?}"),
    }

    let basic = format!("kind = \"basic\"\nusers_file = {users:?}");
    for (bad, key, says) in [
        (
            "kind = \"ldap\"".to_owned(),
            "auth.kind",
            "\"basic\", \"forward\" or \"alb\"",
        ),
        (
            format!("{basic}\nurl = \"http://x\""),
            "auth.url",
            "kind = \"forward\"",
        ),
        (
            format!("{basic}\nuntil_live = false"),
            "auth.until_live",
            "needs `pool`",
        ),
        (format!("{basic}\npool = \"purple\""), "auth.pool", "purple"),
        (
            format!("{basic}\npath_prefix = \"admin\""),
            "auth.path_prefix",
            "start with",
        ),
        (
            format!("{basic}\nuser_header = \"Host\""),
            "auth.user_header",
            "may set",
        ),
        (
            format!("{basic}\nuser_header = \"X-Forwarded-For\""),
            "auth.user_header",
            "may set",
        ),
        (
            format!("{basic}\nrealm = \"a\\\"b\""),
            "auth.realm",
            "no quotes",
        ),
        (
            "kind = \"basic\"\nusers_file = \"/nonexistent/users\"".to_owned(),
            "auth.users_file",
            "/nonexistent/users",
        ),
        (
            "kind = \"forward\"\nurl = \"ftp://x/check\"".to_owned(),
            "auth.url",
            "http://",
        ),
        (
            "kind = \"forward\"\nurl = \"http://x\"\ntimeout = \"soon\"".to_owned(),
            "auth.timeout",
            "soon",
        ),
        (
            "kind = \"alb\"\nkeys_url = \"http://keys.example.com\"\nsigner = \"arn:x\"".to_owned(),
            "auth.keys_url",
            "only on loopback",
        ),
        (
            "kind = \"alb\"\nkeys_url = \"https://k.example\"\nsigner = \"lb-1\"".to_owned(),
            "auth.signer",
            "ARN",
        ),
        (
            format!("{basic}\npassword = \"hunter2\""),
            "password",
            "unknown field",
        ),
    ] {
        let text = format!("{MINIMAL}\n[[auth]]\nname = \"r\"\n{bad}\n");
        let e = err(&text);
        assert!(e.contains(key) && e.contains(says), "{bad}: {e}");
        if key != "password" {
            let written = key.rsplit('.').next().expect("a key");
            let at = text.rfind(&format!("{written} =")).expect("written");
            let line = text[..at].matches('\n').count() + 1;
            assert!(
                e.contains(&format!("line {line}")),
                "{bad}: line {line}: {e}"
            );
        }
    }
    // A kind's own key missing.
    let e = err(&format!(
        "{MINIMAL}\n[[auth]]\nname = \"r\"\nkind = \"forward\"\n"
    ));
    assert!(e.contains("needs `url`"), "{e}");
    // The users file's own misuse names the file and its line.
    for (content, says) in [
        ("ann:hunter2\n".to_owned(), "plain passwords are refused"),
        ("# nobody\n".to_owned(), "lists no user"),
        (format!("ann:{bcrypt}\nann:{bcrypt}\n"), "listed twice"),
        ("just-a-name\n".to_owned(), "write user:hash"),
        ("ann:$argon2id$v=19$garbage\n".to_owned(), "neither argon2"),
    ] {
        let f = dir.path().join("bad-users");
        std::fs::write(&f, &content).expect("write");
        let e = err(&format!(
            "{MINIMAL}\n[[auth]]\nname = \"r\"\nkind = \"basic\"\nusers_file = {:?}\n",
            f.display().to_string()
        ));
        assert!(
            e.contains(says) && e.contains("bad-users"),
            "{content}: {e}"
        );
    }
    let e = err(&format!(
        "{MINIMAL}\n[[auth]]\nname = \"a\"\n{basic}\n[[auth]]\nname = \"a\"\n{basic}\n"
    ));
    assert!(e.contains("names two rules"), "{e}");
}

/// `[pools.NAME] protocol`: "h2c" or "h2" for an HTTP/2-only app (gRPC); anything else
/// refused with the key, its line and what is accepted; "h2c" with an `https://` server, or
/// "h2" with a cleartext one, refused.
#[test]
fn a_pool_protocol_is_http1_or_h2c() {
    let c = parse(&MINIMAL.replace("[pools.green]\n", "[pools.green]\nprotocol = \"h2c\"\n"))
        .expect("valid");
    assert_eq!(c.pool_protocol["green"], Protocol::H2c);
    assert!(!c.pool_protocol.contains_key("blue"));
    for (value, says) in [
        ("\"h2\"", "is not https://"),
        ("\"HTTP2\"", "\"HTTP2\" is not a protocol"),
        ("\"\"", "is not a protocol"),
    ] {
        let e = err(&MINIMAL.replace(
            "[pools.green]\n",
            &format!("[pools.green]\nprotocol = {value}\n"),
        ));
        assert!(
            e.contains("pools.green.protocol") && e.contains(says),
            "{value}: {e}"
        );
        assert!(e.contains("line 11"), "{value}: {e}");
    }
    let e = err(&MINIMAL.replace(
        "[pools.green]\nservers = [\"127.0.0.1:4000\"]",
        "[pools.green]\nprotocol = \"h2c\"\nservers = [\"https://127.0.0.1:4000\"]",
    ));
    assert!(
        e.contains("cleartext") && e.contains("https://127.0.0.1:4000"),
        "{e}"
    );
    let c = parse(&MINIMAL.replace(
        "[pools.green]\nservers = [\"127.0.0.1:4000\"]",
        "[pools.green]\nprotocol = \"h2\"\nservers = [\"https://127.0.0.1:4000\"]",
    ))
    .expect("valid");
    assert_eq!(c.pool_protocol["green"], Protocol::H2);
    let e = err(&MINIMAL.replace("[pools.green]\n", "[pools.green]\nprotocol = 2\n"));
    assert!(e.contains("protocol"), "{e}");
}

/// `[pools.NAME.health] type = "grpc"`: a gRPC health check of `grpc_service` ("" when not
/// given) for a pool that speaks HTTP/2; refused, naming the key and its line, in `[health]`
/// (every pool), for an HTTP/1.1 pool, with a type that is neither, with a service name that
/// is not one (spaces, control characters, huge), with `grpc_service` alone, or beside the
/// keys only an HTTP check reads.
#[test]
fn a_grpc_health_check_is_per_pool_of_an_h2_pool() {
    let h2_green = MINIMAL.replace("[pools.green]\n", "[pools.green]\nprotocol = \"h2c\"\n");
    let with = |check: &str| format!("{h2_green}[pools.green.health]\n{check}");
    let c = parse(&with("type = \"grpc\"\ngrpc_service = \"shop.Orders\"\n")).expect("valid");
    assert_eq!(
        c.pool_health["green"].grpc_service.as_deref(),
        Some("shop.Orders")
    );
    assert!(c.health.grpc_service.is_none());
    let c = parse(&with("type = \"grpc\"\n")).expect("valid");
    assert_eq!(c.pool_health["green"].grpc_service.as_deref(), Some(""));
    let c = parse(&with("type = \"http\"\npath = \"/up\"\n")).expect("valid");
    assert!(c.pool_health["green"].grpc_service.is_none());

    let huge = format!("type = \"grpc\"\ngrpc_service = \"{}\"\n", "a".repeat(201));
    for (check, key, says) in [
        (
            "type = \"tcp\"\n",
            "pools.green.health.type",
            "\"tcp\" is not a check type",
        ),
        (
            "type = \"GRPC\"\n",
            "pools.green.health.type",
            "is not a check type",
        ),
        ("type = 1\n", "type", ""),
        (
            "grpc_service = \"shop.Orders\"\n",
            "pools.green.health.grpc_service",
            "add type = \"grpc\"",
        ),
        (
            "type = \"grpc\"\ngrpc_service = \"shop Orders\"\n",
            "pools.green.health.grpc_service",
            "is not a gRPC service name",
        ),
        (
            "type = \"grpc\"\ngrpc_service = \"a\\u0000b\"\n",
            "pools.green.health.grpc_service",
            "is not a gRPC service name",
        ),
        (
            huge.as_str(),
            "pools.green.health.grpc_service",
            "at most 200",
        ),
        (
            "type = \"grpc\"\npath = \"/health\"\n",
            "pools.green.health.path",
            "is for an HTTP check",
        ),
        (
            "type = \"grpc\"\nexpect_status = \"2xx\"\n",
            "pools.green.health.expect_status",
            "is for an HTTP check",
        ),
    ] {
        let e = err(&with(check));
        assert!(e.contains(key) && e.contains(says), "{check}: {e}");
    }
    // The error's line is the key's own.
    let e = err(&with("type = \"grpc\"\ngrpc_service = \"shop Orders\"\n"));
    assert!(e.contains("line 17"), "{e}");

    // An HTTP/1.1 pool cannot be asked over gRPC.
    let e = err(&format!("{MINIMAL}[pools.green.health]\ntype = \"grpc\"\n"));
    assert!(
        e.contains("pools.green.health.type") && e.contains("set protocol = \"h2c\""),
        "{e}"
    );
    // Nor can every pool at once.
    let e = err(&format!("{h2_green}[health]\ntype = \"grpc\"\n"));
    assert!(
        e.contains("health.type") && e.contains("[pools.NAME.health]"),
        "{e}"
    );
}

/// `[grpc] error_codes`: gRPC status names (any case) that count as a pool's errors; the
/// default is the server's failures; an unknown name, OK, a number or an unknown key is
/// refused with the key and line.
#[test]
fn grpc_error_codes_are_status_names() {
    let c = parse(MINIMAL).expect("valid");
    assert_eq!(
        c.grpc.error_codes.names().collect::<Vec<_>>(),
        [
            "UNKNOWN",
            "DEADLINE_EXCEEDED",
            "INTERNAL",
            "UNAVAILABLE",
            "DATA_LOSS"
        ]
    );
    let c = parse(&format!(
        "{MINIMAL}[grpc]\nerror_codes = [\"unavailable\", \"NOT_FOUND\"]\n"
    ))
    .expect("valid");
    assert!(c.grpc.error_codes.contains(14) && c.grpc.error_codes.contains(5));
    assert!(!c.grpc.error_codes.contains(13));
    let c = parse(&format!("{MINIMAL}[grpc]\nerror_codes = []\n")).expect("valid");
    assert_eq!(c.grpc.error_codes.names().count(), 0);
    for (value, says) in [
        (
            "[\"UNAVAILABLE\", \"BROKEN\"]",
            "\"BROKEN\" is not a gRPC status",
        ),
        ("[\"OK\"]", "OK is a success"),
        ("[14]", "error_codes"),
        ("\"UNAVAILABLE\"", "error_codes"),
    ] {
        let e = err(&format!("{MINIMAL}[grpc]\nerror_codes = {value}\n"));
        assert!(
            e.contains("grpc.error_codes") || e.contains("error_codes"),
            "{value}: {e}"
        );
        assert!(e.contains(says) && e.contains("line 15"), "{value}: {e}");
    }
    let e = err(&format!("{MINIMAL}[grpc]\nerrors = []\n"));
    assert!(e.contains("errors"), "{e}");
}
