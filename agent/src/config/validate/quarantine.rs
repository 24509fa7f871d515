//! The `[quarantine]` table: reporting anomalous peers, and the leader's verdicts.

use std::time::Duration;

use super::Checker;
use crate::config::raw::RawQuarantine;
use crate::quarantine::QuarantineSettings;

/// Shortest `window`: reports are published once a second and take a gossip round or two.
const MIN_WINDOW: Duration = Duration::from_secs(2);
/// Largest `max_share`: quarantine must never take half the mesh out.
const MAX_SHARE: f64 = 0.5;

pub(super) fn settings(c: &mut Checker<'_>, raw: &RawQuarantine) -> QuarantineSettings {
    let defaults = QuarantineSettings::default();
    let min_observers = match raw.min_observers {
        None => None,
        Some(n @ 2..=32) => Some(n as usize),
        Some(n) => {
            c.error(
                "quarantine.min_observers",
                format!(
                    "{n} is not 2 to 32 (one observer alone must never quarantine a node; \
                     leave it out for a majority of the node's peers)"
                ),
            );
            None
        }
    };
    let window = c.duration("quarantine.window", raw.window.as_deref(), defaults.window);
    if window < MIN_WINDOW {
        c.error(
            "quarantine.window",
            "must be at least 2s (reports are published every second)",
        );
    }
    let probation = c.duration(
        "quarantine.probation",
        raw.probation.as_deref(),
        defaults.probation,
    );
    let max_share = match raw.max_share {
        None => defaults.max_share,
        Some(share) if share.is_finite() && share > 0.0 && share <= MAX_SHARE => share,
        Some(share) => {
            c.error(
                "quarantine.max_share",
                format!("{share} is not above 0 and at most 0.5 (a third is the default)"),
            );
            defaults.max_share
        }
    };
    QuarantineSettings {
        enabled: raw.enabled.unwrap_or(defaults.enabled),
        min_observers,
        window,
        probation,
        max_share,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn check(raw: RawQuarantine) -> (QuarantineSettings, Vec<String>) {
        let mut c = Checker {
            file: Path::new("plexus.toml"),
            errors: Vec::new(),
        };
        let settings = settings(&mut c, &raw);
        (settings, c.errors.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn defaults_when_the_table_is_absent() {
        let (settings, errors) = check(RawQuarantine::default());
        assert!(errors.is_empty());
        assert_eq!(settings, QuarantineSettings::default());
    }

    #[test]
    fn values_are_read() {
        let (settings, errors) = check(RawQuarantine {
            enabled: Some(false),
            min_observers: Some(3),
            window: Some("10s".into()),
            probation: Some("5m".into()),
            max_share: Some(0.25),
        });
        assert!(errors.is_empty(), "{errors:?}");
        assert!(!settings.enabled);
        assert_eq!(settings.min_observers, Some(3));
        assert_eq!(settings.window, Duration::from_secs(10));
        assert_eq!(settings.probation, Duration::from_secs(300));
        assert_eq!(settings.max_share, 0.25);
    }

    #[test]
    fn every_mistake_is_named_with_its_key() {
        let (_, errors) = check(RawQuarantine {
            enabled: None,
            min_observers: Some(1),
            window: Some("1s".into()),
            probation: Some("soon".into()),
            max_share: Some(0.9),
        });
        assert_eq!(errors.len(), 4, "{errors:?}");
        for (error, key) in errors.iter().zip([
            "quarantine.min_observers",
            "quarantine.window",
            "quarantine.probation",
            "quarantine.max_share",
        ]) {
            assert!(
                error.starts_with(&format!("plexus.toml: {key}: ")),
                "{error}"
            );
        }
        assert!(errors[0].contains("one observer alone"));
    }
}
