//! A new agent's first certificate, obtained with a join token before the agent starts.
//!
//! The agent makes its key, then asks a seed over QUIC with TLS (the seed's certificate must
//! chain to `tls.ca`; the agent presents none) for a leaf, following `NotLeader` hints to the
//! leader. The leaf and key land in `<data_dir>/tls/`, where [`crate::config::AgentConfig`]
//! finds them from then on: the operator is never needed again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plexus_protocol::{LeaderReply, LeaderRequest};
use quinn::crypto::rustls::QuicClientConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::JoinPlan;
use crate::pki::{ca, files, TrustBundle};
use crate::telemetry::Telemetry;

/// How long one attempt at one address may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Obtains this node's first certificate; retries every seed with backoff until `limit`.
pub async fn join(plan: &JoinPlan, limit: Duration) -> Result<(), String> {
    let token = std::fs::read_to_string(&plan.token_file)
        .map_err(|e| format!("{}: {e}", plan.token_file.display()))?;
    let trust = TrustBundle::load(&plan.ca).map_err(|e| e.to_string())?;
    if plan.seeds.is_empty() {
        return Err("no seeds to ask: set seeds".into());
    }
    let key = node_key(&plan.stored)?;
    let csr = ca::make_request(&key, &plan.node_id)?;
    let request = LeaderRequest::Join {
        token: token.trim().to_owned(),
        node: plan.node_id.clone(),
        csr,
    };
    let endpoint = client_endpoint(&trust)?;
    let deadline = Instant::now() + limit;
    let mut backoff =
        crate::transport::Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
    let mut last = String::new();
    while Instant::now() < deadline {
        let mut queue: Vec<SocketAddr> = plan.seeds.clone();
        let mut asked = 0;
        while let Some(addr) = (!queue.is_empty()).then(|| queue.remove(0)) {
            asked += 1;
            if asked > 8 {
                break;
            }
            match ask(&endpoint, addr, &request).await {
                Ok(LeaderReply::Issued { leaf, roots }) => {
                    endpoint.close(0u32.into(), b"joined");
                    return store(plan, &trust, &key, leaf, roots);
                }
                Ok(LeaderReply::NotLeader {
                    address: Some(leader),
                    ..
                }) => queue.insert(0, leader),
                Ok(LeaderReply::Refused { reason }) => {
                    return Err(format!("the leader refused the join: {reason}"));
                }
                Ok(other) => last = format!("{addr}: {other:?}"),
                Err(error) => last = format!("{addr}: {error}"),
            }
        }
        let wait = backoff.failed(Instant::now(), rand::random::<f64>());
        tracing::info!(%last, ?wait, "join not done yet; retrying");
        tokio::time::sleep(wait.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
    Err(format!("could not join within {limit:?}: {last}"))
}

/// The node's key: made once, kept in `<data_dir>/tls/node.key` (0600) so a retried join
/// asks for the same key.
fn node_key(stored: &std::path::Path) -> Result<PrivateKeyDer<'static>, String> {
    use rustls::pki_types::pem::PemObject;
    let path = stored.join(files::NODE_KEY);
    if let Ok(pem) = std::fs::read(&path) {
        return PrivateKeyDer::from_pem_slice(&pem).map_err(|e| format!("{}: {e}", path.display()));
    }
    let pair = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    std::fs::create_dir_all(stored).map_err(|e| format!("{}: {e}", stored.display()))?;
    crate::pki::write_secret(&path, &pair.serialize_pem()).map_err(|e| e.to_string())?;
    PrivateKeyDer::try_from(pair.serialize_der()).map_err(|e| e.to_string())
}

/// A client-only endpoint that checks the server against `tls.ca` and presents no certificate.
fn client_endpoint(trust: &TrustBundle) -> Result<quinn::Endpoint, String> {
    let (_, verifier) = crate::pki::peer_verifiers(&trust.live(), &Telemetry::new());
    let mut tls = rustls::ClientConfig::builder_with_provider(crate::pki::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![crate::transport::ALPN.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut endpoint = quinn::Endpoint::client("0.0.0.0:0".parse().expect("valid address"))
        .map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    Ok(endpoint)
}

async fn ask(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    request: &LeaderRequest,
) -> Result<LeaderReply, String> {
    tokio::time::timeout(ATTEMPT_TIMEOUT, async {
        let connection = endpoint
            .connect(addr, "plexus")
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let reply = super::client::exchange(&connection, request).await;
        connection.close(0u32.into(), b"done");
        reply
    })
    .await
    .map_err(|_| format!("no answer within {ATTEMPT_TIMEOUT:?}"))?
}

/// Checks the leaf (for this node, our key, chains to `tls.ca`) and writes it beside the key.
fn store(
    plan: &JoinPlan,
    trust: &TrustBundle,
    key: &PrivateKeyDer<'static>,
    leaf: Vec<u8>,
    roots: Vec<Vec<u8>>,
) -> Result<(), String> {
    let info = crate::pki::cert_info(&leaf)?;
    if !info.spiffe_id.ends_with(&format!("/node/{}", plan.node_id)) {
        return Err(format!("the leader issued a leaf for {}", info.spiffe_id));
    }
    // Only tls.ca is trusted here: any member could answer a join, and none but the CA's
    // holders can sign a leaf that chains to it. Roots the answer names are kept only when
    // tls.ca holds them too.
    let configured = trust.certificates();
    if !configured
        .iter()
        .any(|root| super::renew::chains_to(&CertificateDer::from(leaf.clone()), root))
    {
        return Err(format!(
            "the issued leaf does not chain to {} (after a CA rotation, give new agents the \
             current bundle: any agent's <data_dir>/tls/ca.pem)",
            plan.ca.display()
        ));
    }
    let roots: Vec<Vec<u8>> = roots
        .into_iter()
        .filter(|r| configured.iter().any(|c| c.as_ref() == r.as_slice()))
        .collect();
    let chain = vec![CertificateDer::from(leaf)];
    crate::pki::LiveCredentials::new_from(chain.clone(), key)?;
    super::renew::store_credentials(&plan.stored, &chain, key)?;
    // The roots the leader sent are kept as the stored bundle; config loading checks the leaf
    // against tls.ca plus this bundle, and the bundle against tls.ca's trust domain.
    let mut state = plexus_protocol::TrustState::default();
    for der in roots {
        let (serial, not_after, _) = crate::pki::ca::root_facts(&der)?;
        state.roots.push(plexus_protocol::TrustedRoot {
            der,
            serial,
            not_after_ms: u64::try_from(not_after).unwrap_or(0) * 1000,
            retire_at_ms: None,
        });
    }
    super::renew::store_bundle(&plan.stored, &state)?;
    tracing::info!(node = %plan.node_id, serial = %info.serial, "joined the mesh: first certificate stored");
    Ok(())
}
