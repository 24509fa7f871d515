//! `plexus-chaos`: starts real `plexus` agents as processes, drives real traffic through them,
//! injects faults on a seeded schedule and checks steady-state promises, ending with a verdict
//! and evidence (`verdict.json`, `report.md`, `timeline.svg`).
//!
//! Data flow: a [`scenario`] file is validated into a `Scenario`; `run` resolves its fault
//! targets with the seed, starts the cluster (agents behind the UDP fault [`relay`], the
//! harness's own backends), drives the workload, applies and heals faults phase by phase while
//! observing the agents, then the checks turn the [`record::RunRecord`] into a
//! [`record::Verdict`] and [`report`] writes the evidence.

pub mod backend;
pub mod catalogue;
pub mod checks;
pub mod cluster;
pub mod liar;
pub mod observe;
pub mod record;
pub mod relay;
pub mod report;
pub mod run;
pub mod scenario;
pub mod schedule;
pub mod workload;
