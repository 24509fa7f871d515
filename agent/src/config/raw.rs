//! The configuration file as written, before validation: every field optional where the user
//! may leave it out, unknown keys refused.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub node_id: Option<String>,
    pub zone: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub advertise: Option<String>,
    #[serde(default)]
    pub seeds: Vec<String>,
    pub admin: Option<String>,
    pub tls: Option<RawTls>,
    #[serde(default)]
    pub transport: RawTransport,
    #[serde(default)]
    pub gossip: RawGossip,
    #[serde(default)]
    pub service: Vec<RawService>,
    #[serde(default)]
    pub upstream: Vec<RawUpstream>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTransport {
    pub idle_timeout: Option<String>,
    pub keep_alive: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGossip {
    pub interval: Option<String>,
    pub phi_threshold: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub name: String,
    pub address: String,
    pub protocol: Option<String>,
    pub version: Option<String>,
    pub capacity: Option<u32>,
    pub health: Option<RawHealth>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub tcp: Option<bool>,
    pub interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub service: String,
    pub listen: String,
    #[serde(default)]
    pub endpoints: Vec<String>,
    pub timeout: Option<String>,
    pub caller: Option<String>,
}
