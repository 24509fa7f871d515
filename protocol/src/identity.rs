//! Names of things in the mesh, validated once at the edge.
//!
//! A node is known by the SPIFFE ID in its certificate, `spiffe://<trust-domain>/node/<node-id>`.
//! Every name type here checks its syntax when built or decoded, so code that holds one never
//! has to ask again whether it is well formed.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{what} is {len} bytes long; the maximum is {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what} {value:?} contains {found:?}; allowed are {allowed}")]
    BadCharacter {
        what: &'static str,
        value: String,
        found: char,
        allowed: &'static str,
    },
    #[error("{value:?} is not a Plexus SPIFFE ID (spiffe://<trust-domain>/node/<node-id>)")]
    NotSpiffe { value: String },
}

fn check(
    what: &'static str,
    value: &str,
    max: usize,
    allowed: &'static str,
    ok: impl Fn(char) -> bool,
) -> Result<(), IdentityError> {
    if value.is_empty() {
        return Err(IdentityError::Empty { what });
    }
    if value.len() > max {
        return Err(IdentityError::TooLong {
            what,
            len: value.len(),
            max,
        });
    }
    match value.chars().find(|c| !ok(*c)) {
        Some(found) => Err(IdentityError::BadCharacter {
            what,
            value: value.to_owned(),
            found,
            allowed,
        }),
        None => Ok(()),
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:expr, $allowed:literal, $ok:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Longest accepted name in bytes.
            pub const MAX_LEN: usize = $max;

            /// Validates and wraps a name.
            pub fn new(value: impl Into<String>) -> Result<Self, IdentityError> {
                let value = value.into();
                check($what, &value, $max, $allowed, $ok)?;
                Ok(Self(value))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdentityError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdentityError;
            fn from_str(value: &str) -> Result<Self, Self::Err> {
                Self::new(value)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

fn node_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

name_type!(
    /// A node's name in the mesh, as written in its certificate (`edge-a-1`).
    NodeId, "node ID", 128, "ASCII letters, digits, '-', '_' and '.'", node_char
);
name_type!(
    /// A service name (`payments`).
    ServiceName, "service name", 63, "ASCII letters, digits, '-', '_' and '.'", node_char
);
name_type!(
    /// A SPIFFE trust domain (`example.org`): lower-case letters, digits, '-', '_' and '.'.
    TrustDomain, "trust domain", 255, "lower-case ASCII letters, digits, '-', '_' and '.'",
    |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
);

/// A node's SPIFFE ID: `spiffe://<trust-domain>/node/<node-id>`.
///
/// ```
/// use plexus_protocol::SpiffeId;
/// let id: SpiffeId = "spiffe://example.org/node/edge-a-1".parse().unwrap();
/// assert_eq!(id.node_id().as_str(), "edge-a-1");
/// assert_eq!(id.trust_domain().as_str(), "example.org");
/// assert_eq!(id.to_string(), "spiffe://example.org/node/edge-a-1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    node_id: NodeId,
}

impl SpiffeId {
    const SCHEME: &'static str = "spiffe://";
    const NODE_PATH: &'static str = "/node/";

    pub fn new(trust_domain: TrustDomain, node_id: NodeId) -> Self {
        Self {
            trust_domain,
            node_id,
        }
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    pub fn node_id(&self) -> &NodeId {
        &self.node_id
    }
}

impl std::str::FromStr for SpiffeId {
    type Err = IdentityError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let not_spiffe = || IdentityError::NotSpiffe {
            value: value.to_owned(),
        };
        let rest = value.strip_prefix(Self::SCHEME).ok_or_else(not_spiffe)?;
        let slash = rest.find('/').ok_or_else(not_spiffe)?;
        let (domain, path) = rest.split_at(slash);
        let node = path.strip_prefix(Self::NODE_PATH).ok_or_else(not_spiffe)?;
        Ok(Self {
            trust_domain: TrustDomain::new(domain)?,
            node_id: NodeId::new(node)?,
        })
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}{}{}",
            Self::SCHEME,
            self.trust_domain,
            Self::NODE_PATH,
            self.node_id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_bad_syntax() {
        assert!(NodeId::new("").is_err());
        assert!(NodeId::new("a/b").is_err());
        assert!(NodeId::new("x".repeat(129)).is_err());
        assert!(ServiceName::new("pay ments").is_err());
        assert!(TrustDomain::new("Example.org").is_err());
        assert!(NodeId::new("edge-a_1.local").is_ok());
    }

    #[test]
    fn spiffe_ids_parse_only_node_paths() {
        for bad in [
            "spiffe://example.org",
            "spiffe://example.org/",
            "spiffe://example.org/workload/x",
            "spiffe://example.org/node/",
            "spiffe://example.org/node/a/b",
            "https://example.org/node/a",
            "spiffe:///node/a",
        ] {
            assert!(bad.parse::<SpiffeId>().is_err(), "{bad} should be refused");
        }
    }
}
