//! The operator's view of a real agent process: JSON logs and `plexus ctl status`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use plexus_tests::*;

/// Kills the agent even when an assertion fails first.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn json_logs_and_ctl_status_describe_a_running_agent() {
    let mesh = Mesh::new();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port(false)).parse().unwrap();
    let top = format!("listen = \"127.0.0.1:0\"\nadmin = \"{admin}\"\nzone = \"edge-a\"");
    let config = mesh.config("node-a", &mesh.node("node-a"), &top, "");
    let mut child = KillOnDrop(
        Command::new(plexus_bin())
            .args(["--log-format", "json", "agent", "--config"])
            .arg(&config)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // The first log lines arrive on a thread, so a silent agent cannot hang the test.
    let stderr = child.0.stderr.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let ready = std::iter::from_fn(|| lines_rx.recv_timeout(Duration::from_secs(20)).ok())
        .take(50)
        .find_map(|line| {
            let event: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
            (event["fields"]["message"] == "agent ready").then_some(event)
        })
        .expect("an `agent ready` log event");
    assert_eq!(ready["level"], "INFO");
    assert_eq!(ready["fields"]["node"], "node-a");

    let admin_s = admin.to_string();
    let (code, table, stderr) = run_plexus(&["ctl", "--admin", &admin_s, "status"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        table.contains("node        node-a  (spiffe://test.plexus/node/node-a)"),
        "{table}"
    );
    assert!(table.contains("ready       true"), "{table}");
    let (code, json, _) = run_plexus(&["ctl", "--admin", &admin_s, "status", "--json"]);
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(status["zone"], "edge-a");
    assert_eq!(status["trust_domain"], "test.plexus");
    assert!(status["certificate"]["not_after"].as_i64().unwrap() > 0);

    // SIGHUP: a broken file is refused line by line and the agent runs on; a good one with a
    // new access policy is applied.
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{good}\n[access]\ndefault = \"maybe\"\n")).unwrap();
    let hangup = |child: &KillOnDrop| {
        let status = Command::new("kill")
            .args(["-HUP", &child.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    let message = |wanted: &str| {
        std::iter::from_fn(|| lines_rx.recv_timeout(Duration::from_secs(20)).ok())
            .take(200)
            .find_map(|line| {
                let event: serde_json::Value = serde_json::from_str(&line).unwrap();
                let text = event["fields"]["message"].as_str().unwrap_or("").to_owned();
                text.contains(wanted).then_some((text, event))
            })
    };
    hangup(&child);
    let (refused, _) = message("reload refused").expect("a refused reload is logged");
    assert!(refused.contains("node-a.toml: access"), "{refused}");
    assert!(child.0.try_wait().unwrap().is_none(), "the agent runs on");
    let policy = "[consensus]\nbootstrap_expect = 3\n[access]\ndefault = \"deny\"\n\
                  [[policy]]\nallow = { from = \"web\", to = \"payments\" }\n";
    std::fs::write(&config, format!("{good}\n{policy}")).unwrap();
    hangup(&child);
    let (_, reloaded) = message("configuration reloaded").expect("a reload is logged");
    assert_eq!(
        reloaded["fields"]["applied"],
        "access policy reloaded (1 rules, default deny); proposed when this agent leads"
    );

    drop(child);
    let (code, _, stderr) = run_plexus(&["ctl", "--admin", &admin_s, "status"]);
    assert_eq!(code, 1, "no agent any more is a runtime failure");
    assert!(
        stderr.contains(&format!("admin API at {admin}")),
        "{stderr}"
    );
}

/// The agent speaks systemd's notify protocol: READY=1 once serving, WATCHDOG=1 while
/// `WATCHDOG_USEC` is set, RELOADING=1 then READY=1 around SIGHUP, STOPPING=1 on SIGTERM, and
/// exits 0 once drained.
#[test]
fn systemd_hears_ready_watchdog_reload_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let mesh = Mesh::new();
    let socket_path = mesh.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let top = "listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"";
    let config = mesh.config("node-a", &mesh.node("node-a"), top, "");
    let mut child = KillOnDrop(
        Command::new(plexus_bin())
            .args(["agent", "--config"])
            .arg(&config)
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "200000")
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Each datagram is one notification: lines of KEY=VALUE.
    let next = || {
        let mut buf = [0u8; 1024];
        let n = socket.recv(&mut buf).expect("a notification within 20 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let wait_for = |key: &str| {
        (0..100)
            .map(|_| next())
            .find(|message| message.lines().any(|line| line == key))
            .unwrap_or_else(|| panic!("no {key} among 100 notifications"))
    };
    let ready = wait_for("READY=1");
    assert!(
        ready.contains("STATUS=serving as node-a on 127.0.0.1:"),
        "{ready}"
    );
    wait_for("WATCHDOG=1");
    wait_for("WATCHDOG=1");
    let signal = |name: &str, child: &KillOnDrop| {
        let status = Command::new("kill")
            .args([name, &child.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    signal("-HUP", &child);
    let reloading = wait_for("RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    wait_for("READY=1");
    signal("-TERM", &child);
    wait_for("STOPPING=1");
    let exited = (0..1000).find_map(|_| {
        std::thread::sleep(Duration::from_millis(20));
        child.0.try_wait().unwrap()
    });
    assert_eq!(
        exited.map(|s| s.code()),
        Some(Some(0)),
        "a drained agent exits 0"
    );
}

/// `deploy/systemd/plexus.service` passes `systemd-analyze verify` (with ExecStart pointing at
/// this build's binary, since verify checks that the executable exists).
#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/systemd/plexus.service"
    ))
    .unwrap();
    for wanted in [
        "Type=notify",
        "Restart=on-failure",
        "RestartPreventExitStatus=2",
        "StateDirectory=plexus",
        "LimitNOFILE=",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=",
        "SystemCallFilter=@system-service",
        "CapabilityBoundingSet=\n",
        "WatchdogSec=",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.contains(wanted), "the unit lacks {wanted:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plexus.service");
    let bin = plexus_bin();
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/plexus", bin.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd package) is installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    assert!(
        !stderr.contains("plexus.service"),
        "warnings about the unit: {stderr}"
    );
}

/// `deploy/grafana/plexus.json` is a dashboard that queries only metrics the agent exports
/// (names checked against `telemetry::names`), and the Prometheus example scrapes `/metrics`.
#[test]
fn the_grafana_dashboard_reads_metrics_the_agent_exports() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/deploy/grafana/plexus.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let names = std::fs::read_to_string(format!("{root}/agent/src/telemetry/mod.rs")).unwrap();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("plexus_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                let exported = name.strip_suffix("_bucket").unwrap_or(&name);
                assert!(
                    names.contains(&format!("\"{exported}\"")),
                    "panel {:?} queries {name}, which the agent does not export",
                    panel["title"]
                );
                queried += 1;
            }
        }
    }
    assert!(queried >= 20, "{queried} metric references");
    let scrape =
        std::fs::read_to_string(format!("{root}/deploy/prometheus/prometheus.yml")).unwrap();
    assert!(scrape.contains("metrics_path: /metrics"));
}
