//! The chaos harness tested against real agents: a scenario built to break must fail, with
//! the failing check, its measurement and the replay command in the verdict and the report.

use std::path::Path;

use plexus_chaos::record::{CheckStatus, EventKind};
use plexus_chaos::run::{run, RunOptions};
use plexus_chaos::scenario::Scenario;
use plexus_tests::plexus_bin;

fn scenario(relative: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative);
    Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_built_to_break_fails_with_evidence() {
    let scenario = scenario("chaos/selftest/must-fail.toml");
    let dir = tempfile::tempdir().unwrap();
    let options = RunOptions {
        seed: None,
        plexus: plexus_bin(),
        progress: false,
        work_dir: Some(dir.path().join("logs")),
    };
    let (record, verdict) = run(&scenario, &options).await.expect("the harness runs it");
    assert!(!verdict.passed, "{verdict:#?}");
    assert!(verdict.aborted, "the failing check is marked abort");
    assert!(
        record.length < scenario.length(),
        "ended early: {:?}",
        record.length
    );
    assert!(record.events.iter().any(|e| e.kind == EventKind::Abort));
    let during = &verdict.checks[0];
    assert_eq!(during.status, CheckStatus::Fail, "{during:#?}");
    assert!(during.measured.is_some_and(|m| m < 0.5), "{during:#?}");
    let before = &verdict.checks[1];
    assert_eq!(before.status, CheckStatus::Pass, "{before:#?}");
    assert_eq!(verdict.checks[2].status, CheckStatus::NotEvaluated);
    assert!(
        verdict.replay.ends_with("must-fail.toml --seed 5"),
        "{}",
        verdict.replay
    );
    // The agents answered 503 with plexus' own error after trying every endpoint; backends saw
    // the attempts, bounded by the retry setting.
    assert!(!record.hits.is_empty() && record.faults.len() == 1);
    let written =
        plexus_chaos::report::write(&dir.path().join("report"), &record, &verdict).unwrap();
    assert_eq!(written.len(), 3);
    let md = std::fs::read_to_string(dir.path().join("report/report.md")).unwrap();
    assert!(md.contains("FAIL") && md.contains("--seed 5"), "{md}");
}

#[test]
fn the_catalogue_validates_and_covers_the_issue() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../chaos/scenarios");
    let entries = plexus_chaos::catalogue::list(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(entries.len() >= 12, "{} scenarios", entries.len());
    assert!(entries.iter().all(|e| !e.purpose.is_empty()));
    assert!(entries.iter().filter(|e| e.quick).count() >= 3);
}
