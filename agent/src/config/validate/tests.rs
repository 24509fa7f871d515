use std::path::Path;

use super::super::AgentConfig;

fn errors(text: &str) -> Vec<String> {
    match AgentConfig::from_toml(Path::new("/etc/plexus/test.toml"), text) {
        Ok(_) => panic!("config should be refused"),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

fn has(errors: &[String], needle: &str) -> bool {
    errors.iter().any(|e| e.contains(needle))
}

#[test]
fn unknown_keys_name_their_path() {
    let e = errors("[[upstream]]\nservice = \"a\"\nlisten = \"127.0.0.1:1\"\nlisen = 1\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("/etc/plexus/test.toml: upstream[0].lisen: unknown field"),
        "{e:?}"
    );
}

#[test]
fn syntax_errors_name_the_line() {
    let e = errors("listen = \"127.0.0.1:1\"\nthis is not toml\n");
    assert!(e[0].starts_with("/etc/plexus/test.toml: line 2: "), "{e:?}");
}

#[test]
fn every_mistake_is_reported_once_with_its_key() {
    let e = errors(
        r#"
listen = "nowhere"
admin = "127.0.0.1:9901"
seeds = ["127.0.0.1:99999"]
[transport]
idle_timeout = "soon"
[[service]]
name = "bad name"
address = "127.0.0.1:80"
protocol = "udp"
[[upstream]]
service = "pay"
listen = "127.0.0.1:9901"
endpoints = ["127.0.0.1:4433"]
"#,
    );
    for needle in [
        "test.toml: listen: invalid address \"nowhere\"",
        "test.toml: seeds[0]: invalid address",
        "test.toml: transport.idle_timeout: invalid duration \"soon\"",
        "test.toml: service[0].name: service name \"bad name\" contains ' '",
        "test.toml: service[0].protocol: unknown protocol \"udp\"",
        "test.toml: upstream[0].listen: 127.0.0.1:9901 is already used by admin",
        "test.toml: tls.ca: is required",
        "test.toml: tls.cert: is required",
        "test.toml: tls.key: is required",
    ] {
        assert!(has(&e, needle), "missing {needle:?} in {e:#?}");
    }
    assert_eq!(e.len(), 9, "{e:#?}");
}

#[test]
fn gossip_settings_and_service_limits_are_checked() {
    let e = errors(
        "[gossip]\ninterval = \"10ms\"\nphi_threshold = 0.5\n[[service]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\ncapacity = 0\n[[upstream]]\nservice = \"b\"\nlisten = \"127.0.0.1:2\"\ncaller = \"bad caller\"\n",
    );
    for needle in [
        "gossip.interval: must be between 50ms and 60s",
        "gossip.phi_threshold: 0.5 is outside 1 to 100",
        "service[0].capacity: must be at least 1",
        "upstream[0].caller: service name \"bad caller\"",
    ] {
        assert!(has(&e, needle), "missing {needle:?} in {e:#?}");
    }
    assert!(
        !has(&e, "endpoints"),
        "an upstream without endpoints uses discovery: {e:#?}"
    );
}

#[test]
fn missing_files_are_named() {
    let e = errors("[tls]\nca = \"nope/ca.pem\"\ncert = \"/nonexistent/node.pem\"\nkey = \"k\"\n");
    assert!(
        has(&e, "tls.ca: cannot read /etc/plexus/nope/ca.pem"),
        "{e:#?}"
    );
    assert!(
        has(&e, "tls.cert: cannot read /nonexistent/node.pem"),
        "{e:#?}"
    );
}

#[test]
fn listeners_collide_only_where_the_kernel_would_refuse() {
    use super::collides;
    let a = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
    assert!(collides(a("127.0.0.1:80"), a("127.0.0.1:80")));
    assert!(collides(a("0.0.0.0:80"), a("127.0.0.1:80")));
    assert!(
        collides(a("[::]:80"), a("127.0.0.1:80")),
        "[::] is dual-stack"
    );
    assert!(
        collides(a("[::ffff:127.0.0.1]:80"), a("127.0.0.1:80")),
        "v4-mapped"
    );
    assert!(
        !collides(a("0.0.0.0:80"), a("[::1]:80")),
        "0.0.0.0 covers IPv4 only"
    );
    assert!(!collides(a("127.0.0.1:80"), a("[::1]:80")));
    assert!(!collides(a("127.0.0.1:80"), a("127.0.0.1:81")));
    assert!(
        !collides(a("127.0.0.1:0"), a("127.0.0.1:0")),
        "ephemeral ports never collide"
    );
}

#[test]
fn bad_seeds_are_reported_once_and_timeouts_are_bounded() {
    let e = errors(
        "seeds = [\"nowhere\"]\n[transport]\nidle_timeout = \"1s\"\n[[upstream]]\nservice = \"a\"\nlisten = \"127.0.0.1:1\"\ntimeout = \"400d\"\n",
    );
    assert!(has(&e, "seeds[0]: invalid address"), "{e:#?}");
    assert!(!has(&e, "no endpoints and no seeds"), "{e:#?}");
    assert!(
        has(
            &e,
            "transport.idle_timeout: keep_alive (2s) must be shorter than idle_timeout (1s)"
        ),
        "{e:#?}"
    );
    assert!(
        has(
            &e,
            "upstream[0].timeout: \"400d\" is longer than the maximum of 1 day"
        ),
        "{e:#?}"
    );
}

#[test]
fn worker_threads_are_bounded() {
    let e = errors("worker_threads = 0\n");
    assert!(
        has(
            &e,
            "/etc/plexus/test.toml: worker_threads: 0 is not 1 to 256"
        ),
        "{e:?}"
    );
    let e = errors("worker_threads = 1000\n");
    assert!(has(&e, "worker_threads: 1000 is not 1 to 256"), "{e:?}");
}
