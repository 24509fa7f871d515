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
