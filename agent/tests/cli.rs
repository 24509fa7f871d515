//! The `plexus` binary's own commands: `pki init`, `pki issue`, usage errors, `demo`.
//! (Having an integration test here also makes `cargo test --workspace` build the binary
//! that the multi-node tests in `tests/` start as a real process.)

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use rustls::pki_types::pem::PemObject;

fn plexus(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_plexus"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn pki_init_writes_a_ca_with_a_private_key_and_refuses_to_overwrite_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ca");
    let out_s = out.to_str().unwrap();
    let (code, stdout, stderr) = plexus(&[
        "pki",
        "init",
        "--trust-domain",
        "example.org",
        "--out",
        out_s,
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("spiffe://example.org"), "{stdout}");
    assert_eq!(mode(&out.join("ca.key")), 0o600);
    let before = std::fs::read(out.join("ca.key")).unwrap();

    let (code, _, stderr) = plexus(&[
        "pki",
        "init",
        "--trust-domain",
        "example.org",
        "--out",
        out_s,
    ]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("ca.key: refusing to overwrite an existing key (pass --force"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(out.join("ca.key")).unwrap(),
        before,
        "the key was not touched"
    );

    let (code, _, stderr) = plexus(&[
        "pki",
        "init",
        "--trust-domain",
        "example.org",
        "--out",
        out_s,
        "--force",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_ne!(std::fs::read(out.join("ca.key")).unwrap(), before);
    assert_eq!(mode(&out.join("ca.key")), 0o600);
}

#[test]
fn pki_issue_writes_a_spiffe_leaf_with_the_requested_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let node = dir.path().join("node");
    let (ca_s, node_s) = (ca.to_str().unwrap(), node.to_str().unwrap());
    assert_eq!(
        plexus(&[
            "pki",
            "init",
            "--trust-domain",
            "example.org",
            "--out",
            ca_s
        ])
        .0,
        0
    );
    let (code, _, stderr) = plexus(&[
        "pki", "issue", "--ca", ca_s, "--node", "edge-a-1", "--out", node_s,
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(mode(&node.join("node.key")), 0o600);
    let pem = std::fs::read(node.join("node.pem")).unwrap();
    let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
    let info = plexus_agent::pki::cert_info(&der).unwrap();
    assert_eq!(info.spiffe_id, "spiffe://example.org/node/edge-a-1");
    let lifetime = info.not_after - info.not_before;
    assert_eq!(
        lifetime,
        24 * 3600 + 60,
        "24h plus the minute of clock slack before now"
    );
    // The node directory is self-contained: it has the CA certificate too, and the credentials
    // load and verify against it.
    plexus_agent::pki::TrustBundle::load(&node.join("ca.pem")).unwrap();
    plexus_agent::pki::NodeCredentials::load(&node.join("node.pem"), &node.join("node.key"))
        .unwrap();

    let (code, _, stderr) = plexus(&[
        "pki", "issue", "--ca", ca_s, "--node", "edge-a-1", "--out", node_s,
    ]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("node.key: refusing to overwrite"),
        "{stderr}"
    );
    let (code, _, stderr) = plexus(&[
        "pki",
        "issue",
        "--ca",
        ca_s,
        "--node",
        "edge-a-1",
        "--out",
        node_s,
        "--force",
        "--lifetime",
        "1h",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let pem = std::fs::read(node.join("node.pem")).unwrap();
    let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
    let reissued = plexus_agent::pki::cert_info(&der).unwrap();
    assert_eq!(reissued.not_after - reissued.not_before, 3600 + 60);
    assert_ne!(
        reissued.serial, info.serial,
        "every certificate gets its own serial"
    );
    assert_eq!(
        reissued.serial.len(),
        32,
        "128-bit serial in hex: {}",
        reissued.serial
    );
    assert_eq!(mode(&node.join("node.key")), 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(&node)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn bad_usage_exits_2_with_a_reason() {
    let (code, _, stderr) = plexus(&[
        "pki",
        "init",
        "--trust-domain",
        "Bad Domain",
        "--out",
        "/tmp/x",
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("trust domain"), "{stderr}");
    let (code, _, stderr) = plexus(&[
        "pki",
        "issue",
        "--ca",
        "/nonexistent",
        "--node",
        "n",
        "--out",
        "/tmp/x",
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/ca.pem"), "{stderr}");
    assert_eq!(plexus(&["frobnicate"]).0, 2);
    assert_eq!(plexus(&["--help"]).0, 0);
}

#[test]
fn lifetimes_out_of_range_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ca");
    for lifetime in ["0s", "10s", "10000y", "soon"] {
        let (code, _, stderr) = plexus(&[
            "pki",
            "init",
            "--trust-domain",
            "example.org",
            "--out",
            out.to_str().unwrap(),
            "--lifetime",
            lifetime,
        ]);
        assert_eq!(code, 2, "--lifetime {lifetime}: {stderr}");
        assert!(stderr.contains("--lifetime"), "{stderr}");
    }
    assert!(!out.join("ca.key").exists(), "nothing was written");
}

#[test]
fn pki_issue_refuses_a_mismatched_ca_key_and_a_foreign_ca_copy() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    for ca in ["ca1", "ca2"] {
        assert_eq!(
            plexus(&[
                "pki",
                "init",
                "--trust-domain",
                "example.org",
                "--out",
                &path(ca)
            ])
            .0,
            0
        );
    }
    // A CA directory whose key belongs to another CA: nothing is issued.
    std::fs::copy(dir.path().join("ca2/ca.key"), dir.path().join("ca1/ca.key")).unwrap();
    let (code, _, stderr) = plexus(&[
        "pki",
        "issue",
        "--ca",
        &path("ca1"),
        "--node",
        "n",
        "--out",
        &path("n"),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("ca.key: does not match the CA certificate"),
        "{stderr}"
    );
    assert!(!dir.path().join("n/node.key").exists());

    // Issuing into a directory that holds another CA's ca.pem needs --force.
    let (code, _, stderr) = plexus(&[
        "pki",
        "issue",
        "--ca",
        &path("ca2"),
        "--node",
        "n",
        "--out",
        &path("ca1"),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("holds a different CA certificate (pass --force"),
        "{stderr}"
    );
}

/// `plexus demo`, the README's first command: five agents, one backend failing, and the mesh's
/// reactions narrated: routed around, ejected, and back in rotation once repaired. It lives in
/// this test binary, not in the multi-node suite, so its load never runs beside timing-sensitive
/// mesh tests (test binaries run one after another).
#[test]
fn the_demo_narrates_the_feedback_loop() {
    let out = Command::new(env!("CARGO_BIN_EXE_plexus"))
        .arg("demo")
        .env("RUST_LOG", "error")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for wanted in [
        "[6/6]",
        "route around",
        "ejected",
        "back in rotation",
        "five agents stopped cleanly",
    ] {
        assert!(stdout.contains(wanted), "no {wanted:?} in:\n{stdout}");
    }
}
