//! Configuration mistakes: the real binary exits 2 with one line per mistake naming file, key
//! and reason.

use plexus_tests::*;

/// Writes a config with `body` after valid TLS paths and runs `plexus agent --config F --check`.
fn check(mesh: &Mesh, name: &str, top: &str, extra: &str) -> (i32, String, String) {
    let node = mesh.node("node-a");
    let path = mesh.config(name, &node, top, extra);
    run_plexus(&["agent", "--config", path.to_str().unwrap(), "--check"])
}

fn assert_refused(result: (i32, String, String), file: &str, key: &str, reason: &str) {
    let (code, _, stderr) = result;
    assert_eq!(code, 2, "exit code; stderr: {stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains(&format!(": {key}: ")))
        .unwrap_or_else(|| panic!("no line for key {key} in:\n{stderr}"));
    assert!(
        line.contains(file),
        "line does not name the file {file}: {line}"
    );
    assert!(
        line.contains(reason),
        "line does not say {reason:?}: {line}"
    );
}

#[test]
fn a_good_config_passes_check() {
    let mesh = Mesh::new();
    let (code, stdout, stderr) = check(&mesh, "good", "listen = \"127.0.0.1:0\"", "");
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("configuration OK (node node-a"), "{stdout}");
}

#[test]
fn unknown_keys_are_refused() {
    let mesh = Mesh::new();
    let result = check(
        &mesh,
        "unknown",
        "listen = \"127.0.0.1:0\"\nlisten_port = 4433",
        "",
    );
    assert_refused(
        result,
        "unknown.toml",
        "listen_port",
        "unknown field `listen_port`",
    );
}

#[test]
fn bad_addresses_are_refused() {
    let mesh = Mesh::new();
    let result = check(&mesh, "address", "listen = \"127.0.0.1:99999\"", "");
    assert_refused(
        result,
        "address.toml",
        "listen",
        "invalid address \"127.0.0.1:99999\"",
    );
}

#[test]
fn duplicate_listeners_are_refused() {
    let mesh = Mesh::new();
    let extra = "[[upstream]]\nservice = \"a\"\nlisten = \"127.0.0.1:15001\"\nendpoints = [\"127.0.0.1:4433\"]\n\
                 [[upstream]]\nservice = \"b\"\nlisten = \"0.0.0.0:15001\"\nendpoints = [\"127.0.0.1:4433\"]\n";
    let result = check(&mesh, "dup", "", extra);
    assert_refused(
        result,
        "dup.toml",
        "upstream[1].listen",
        "already used by upstream[0].listen",
    );
}

#[test]
fn missing_files_are_refused() {
    let mesh = Mesh::new();
    let path = mesh.path().join("missing.toml");
    std::fs::write(
        &path,
        "[tls]\nca = \"ca/ca.pem\"\ncert = \"nowhere/node.pem\"\nkey = \"nowhere/node.key\"\n",
    )
    .unwrap();
    let result = run_plexus(&["agent", "--config", path.to_str().unwrap(), "--check"]);
    assert_refused(result.clone(), "missing.toml", "tls.cert", "cannot read");
    assert_refused(result, "missing.toml", "tls.key", "No such file");
}

#[test]
fn unreadable_and_mismatched_keys_are_refused() {
    let mesh = Mesh::new();
    let a = mesh.node("node-a");
    let b = mesh.node("node-b");
    let garbage = mesh.path().join("garbage.key");
    std::fs::write(
        &garbage,
        "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let path = mesh.path().join("garbage.toml");
    let text = format!(
        "[tls]\nca = \"{0}/ca.pem\"\ncert = \"{0}/node.pem\"\nkey = \"{1}\"\n",
        a.dir.display(),
        garbage.display()
    );
    std::fs::write(&path, text).unwrap();
    let result = run_plexus(&["agent", "--config", path.to_str().unwrap(), "--check"]);
    assert_refused(result, "garbage.toml", "tls.key", "no usable private key");

    let path = mesh.path().join("mismatch.toml");
    let text = format!(
        "[tls]\nca = \"{0}/ca.pem\"\ncert = \"{0}/node.pem\"\nkey = \"{1}/node.key\"\n",
        a.dir.display(),
        b.dir.display()
    );
    std::fs::write(&path, text).unwrap();
    let result = run_plexus(&["agent", "--config", path.to_str().unwrap(), "--check"]);
    assert_refused(
        result,
        "mismatch.toml",
        "tls.key",
        "does not match certificate",
    );
}

#[test]
fn a_node_id_that_is_not_the_certificates_is_refused() {
    let mesh = Mesh::new();
    let result = check(&mesh, "who", "node_id = \"node-z\"", "");
    assert_refused(
        result,
        "who.toml",
        "node_id",
        "certificate in tls.cert is for spiffe://test.plexus/node/node-a",
    );
}

#[test]
fn the_agent_itself_exits_2_on_a_bad_config_and_on_a_missing_file() {
    let mesh = Mesh::new();
    let node = mesh.node("node-a");
    let path = mesh.config("bad", &node, "admin = \"localhost\"", "");
    let (code, _, stderr) = run_plexus(&["agent", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("bad.toml: admin: invalid address \"localhost\""),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line per mistake: {stderr}");

    let (code, _, stderr) = run_plexus(&["agent", "--config", "/nonexistent/plexus.toml"]);
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with("/nonexistent/plexus.toml: (file): cannot read configuration"),
        "{stderr}"
    );
}

#[test]
fn the_example_config_in_deploy_is_valid_but_for_its_certificate_paths() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/plexus.example.toml");
    let (code, _, stderr) = run_plexus(&["agent", "--config", example, "--check"]);
    assert_eq!(code, 2);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        3,
        "only the three /etc/plexus files are missing here:\n{stderr}"
    );
    for key in ["tls.ca", "tls.cert", "tls.key"] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!(": {key}: cannot read /etc/plexus/"))),
            "{stderr}"
        );
    }
}

#[test]
fn an_own_certificate_peers_would_refuse_is_refused() {
    let mesh = Mesh::new();
    let now = time::OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let expired = mesh.node_valid(
        "node-old",
        plexus_agent::pki::Validity {
            not_before: now - day * 2,
            not_after: now - day,
        },
    );
    let path = mesh.config("expired", &expired, "", "");
    let result = run_plexus(&["agent", "--config", path.to_str().unwrap(), "--check"]);
    assert_refused(result, "expired.toml", "tls.cert", "certificate expired");

    // Same trust domain, another CA: the trust domains match, the signature does not.
    let other = Mesh::new();
    let stranger = other.node("node-x");
    let path = mesh.path().join("stranger.toml");
    let text = format!(
        "[tls]\nca = \"{}\"\ncert = \"{1}/node.pem\"\nkey = \"{1}/node.key\"\n",
        mesh.ca_dir().join("ca.pem").display(),
        stranger.dir.display()
    );
    std::fs::write(&path, text).unwrap();
    let result = run_plexus(&["agent", "--config", path.to_str().unwrap(), "--check"]);
    assert_refused(
        result,
        "stranger.toml",
        "tls.cert",
        "not signed by a CA in tls.ca",
    );
}

#[test]
fn a_relative_data_dir_is_read_from_the_config_files_directory() {
    let mesh = Mesh::new();
    let top = "listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\ndata_dir = \"state\"\n";
    let path = mesh.config("node-a", &mesh.node("node-a"), top, "");
    let config = plexus_agent::config::AgentConfig::load(&path).unwrap();
    assert_eq!(config.data_dir, mesh.path().join("state"));
    assert_eq!(config.state_dir(), Some(mesh.path().join("state")));
}

/// The configuration reference is checked against the code: every key the agent reads (the
/// fields of `config/raw.rs`, which refuses unknown keys) is documented in
/// `deploy/plexus.example.toml`, as `key =` or as a `[table]` (commented out or not).
#[test]
fn every_configuration_key_is_documented_in_the_example() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let raw = std::fs::read_to_string(format!("{root}/agent/src/config/raw.rs")).unwrap();
    let example = std::fs::read_to_string(format!("{root}/deploy/plexus.example.toml")).unwrap();
    let keys: Vec<&str> = raw
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub "))
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim()))
        .filter(|name| name.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .collect();
    assert!(keys.len() > 50, "{} keys read from raw.rs", keys.len());
    let documented = |key: &str| {
        example.lines().any(|line| {
            let line = line.trim_start_matches(['#', ' ']);
            line.starts_with(&format!("[{key}]"))
                || line.starts_with(&format!("[[{key}]]"))
                || line.starts_with(&format!("{key} ="))
                || line.contains(&format!("{{ {key} ="))
                || line.contains(&format!(", {key} ="))
        })
    };
    let missing: Vec<&&str> = keys.iter().filter(|k| !documented(k)).collect();
    assert!(
        missing.is_empty(),
        "keys missing from the example: {missing:?}"
    );
}
