//! The trust and credentials a running agent uses, swapped while it runs.
//!
//! [`LiveTrust`] holds the roots to trust and the committed deny list; every TLS verifier and
//! the gossip seal checks read it per handshake, so a committed rotation or quarantine takes
//! effect on the next handshake without rebuilding any rustls config and without touching
//! established connections. [`LiveCredentials`] is the certificate resolver of both TLS roles:
//! a renewed leaf is served from the next handshake on.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use plexus_protocol::{NodeId, TrustDomain, TrustState};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, SignatureScheme};

use super::credentials::{ca_trust_domain, cert_info, CertInfo};
use super::NodeCredentials;

/// One consistent set of roots and denials.
#[derive(Debug)]
pub struct TrustView {
    pub roots: Arc<RootCertStore>,
    /// The roots as DER, in the order they were given (oldest first).
    pub root_ders: Vec<CertificateDer<'static>>,
    pub(super) webpki_client: Arc<dyn ClientCertVerifier>,
    denied_nodes: HashSet<NodeId>,
    denied_serials: HashSet<String>,
    /// Grows with every change, so caches keyed on it notice.
    pub version: u64,
}

impl TrustView {
    /// Whether a certificate of `node` with `serial` (lowercase hex) is deny-listed.
    pub fn denies(&self, node: &NodeId, serial: &str) -> bool {
        self.denied_nodes.contains(node) || self.denied_serials.contains(serial)
    }
}

/// The roots and deny list every verifier of this agent reads.
#[derive(Debug)]
pub struct LiveTrust {
    trust_domain: TrustDomain,
    current: RwLock<Arc<TrustView>>,
}

fn build_view(
    roots: Vec<CertificateDer<'static>>,
    denied_nodes: HashSet<NodeId>,
    denied_serials: HashSet<String>,
    version: u64,
) -> Result<TrustView, String> {
    let mut store = RootCertStore::empty();
    for der in &roots {
        store.add(der.clone()).map_err(|e| e.to_string())?;
    }
    let store = Arc::new(store);
    let webpki_client =
        WebPkiClientVerifier::builder_with_provider(store.clone(), super::crypto_provider())
            .build()
            .map_err(|e| format!("client verifier: {e}"))?;
    Ok(TrustView {
        roots: store,
        root_ders: roots,
        webpki_client,
        denied_nodes,
        denied_serials,
        version,
    })
}

impl LiveTrust {
    /// Starts from the roots of `tls.ca`.
    pub fn new(
        trust_domain: TrustDomain,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<Arc<Self>, String> {
        let view = build_view(roots, HashSet::new(), HashSet::new(), 0)?;
        Ok(Arc::new(Self {
            trust_domain,
            current: RwLock::new(Arc::new(view)),
        }))
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The current roots and denials.
    pub fn view(&self) -> Arc<TrustView> {
        self.current.read().expect("trust lock poisoned").clone()
    }

    /// Replaces the roots from `tls.ca` (a reload), keeping the deny list; for use only while
    /// the decision log holds no roots (then they are the log's). Returns whether they changed.
    pub fn configure(&self, roots: &[CertificateDer<'static>]) -> Result<bool, String> {
        // Held throughout, so a deny list `follow` commits meanwhile is not lost.
        let mut slot = self.current.write().expect("trust lock poisoned");
        let current = slot.clone();
        if roots == current.root_ders.as_slice() {
            return Ok(false);
        }
        for root in roots {
            let domain = ca_trust_domain(root)?;
            if domain != self.trust_domain {
                return Err(format!(
                    "tls.ca is for {domain}, this agent for {}: a new trust domain needs a restart",
                    self.trust_domain
                ));
            }
        }
        let view = build_view(
            roots.to_vec(),
            current.denied_nodes.clone(),
            current.denied_serials.clone(),
            current.version + 1,
        )?;
        *slot = Arc::new(view);
        Ok(true)
    }

    /// Follows the committed trust state: its roots (once the log holds any; before that the
    /// configured ones stay) and its deny list. Roots of another trust domain or unparsable ones
    /// are skipped and logged; if none is usable the current roots stay. Returns whether
    /// anything changed.
    pub fn follow(&self, state: &TrustState) -> bool {
        let current = self.view();
        let mut roots: Vec<CertificateDer<'static>> = Vec::new();
        for root in &state.roots {
            let der = CertificateDer::from(root.der.clone());
            match ca_trust_domain(&der) {
                Ok(domain) if domain == self.trust_domain => roots.push(der),
                Ok(domain) => {
                    tracing::error!(serial = %root.serial, %domain, "committed root of another trust domain ignored")
                }
                Err(reason) => {
                    tracing::error!(serial = %root.serial, %reason, "committed root unusable")
                }
            }
        }
        if roots.is_empty() {
            roots = current.root_ders.clone();
        }
        let denied_nodes: HashSet<NodeId> = state.quarantined.keys().cloned().collect();
        let denied_serials: HashSet<String> = state
            .quarantined
            .values()
            .flat_map(|q| q.serials.iter().cloned())
            .collect();
        if roots == current.root_ders
            && denied_nodes == current.denied_nodes
            && denied_serials == current.denied_serials
        {
            return false;
        }
        match build_view(roots, denied_nodes, denied_serials, current.version + 1) {
            Ok(view) => {
                tracing::info!(
                    roots = view.root_ders.len(),
                    denied = view.denied_nodes.len(),
                    "trust bundle and deny list updated"
                );
                *self.current.write().expect("trust lock poisoned") = Arc::new(view);
                true
            }
            Err(error) => {
                tracing::error!(%error, "committed trust bundle unusable; keeping the current one");
                false
            }
        }
    }
}

/// This node's certificate and key as both TLS roles present them, replaceable while running.
#[derive(Debug)]
pub struct LiveCredentials {
    current: RwLock<(Arc<CertifiedKey>, CertInfo)>,
    key: PrivateKeyDer<'static>,
}

impl LiveCredentials {
    pub fn new(credentials: &NodeCredentials) -> Result<Arc<Self>, String> {
        Self::new_from(credentials.chain.clone(), &credentials.key)
    }

    /// From a chain and its key, checked to match.
    pub fn new_from(
        chain: Vec<CertificateDer<'static>>,
        key: &PrivateKeyDer<'static>,
    ) -> Result<Arc<Self>, String> {
        let info = cert_info(chain.first().ok_or("empty certificate chain")?)?;
        let certified = certified(chain, key)?;
        Ok(Arc::new(Self {
            current: RwLock::new((certified, info)),
            key: key.clone_key(),
        }))
    }

    /// What the current leaf says (serial, dates).
    pub fn info(&self) -> CertInfo {
        self.current
            .read()
            .expect("credentials lock poisoned")
            .1
            .clone()
    }

    /// The current chain (leaf first).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current
            .read()
            .expect("credentials lock poisoned")
            .0
            .cert
            .clone()
    }

    /// The node's private key (renewals keep it).
    pub fn key(&self) -> &PrivateKeyDer<'static> {
        &self.key
    }

    /// Serves `chain` (a renewed leaf for the same key) from the next handshake on.
    pub fn replace(&self, chain: Vec<CertificateDer<'static>>) -> Result<CertInfo, String> {
        let info = cert_info(&chain[0])?;
        let certified = certified(chain, &self.key)?;
        *self.current.write().expect("credentials lock poisoned") = (certified, info.clone());
        Ok(info)
    }
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: &PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, String> {
    if chain.is_empty() {
        return Err("empty certificate chain".into());
    }
    let signing = super::crypto_provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| format!("unusable private key: {e}"))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|_| "the certificate does not match the node's key".to_owned())?;
    Ok(Arc::new(certified))
}

impl ResolvesServerCert for LiveCredentials {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().ok()?.0.clone())
    }
}

impl ResolvesClientCert for LiveCredentials {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().ok()?.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
