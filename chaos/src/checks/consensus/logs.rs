//! Comparing voters' committed logs. A voter holds the committed tail of its log: one that
//! caught up by snapshot (or compacted) holds no entries before its snapshot, so two logs are
//! compared on the indexes both hold, and must end on the same committed entry.

use std::collections::BTreeMap;

use super::{LogEntry, VoterLog};

/// Where the voters' logs disagree, if anywhere: an index both hold with another term or
/// digest, a gap in one log, or a different last committed entry.
pub fn first_divergence(logs: &[VoterLog]) -> Option<String> {
    for (name, log) in logs {
        if log.is_empty() {
            return Some(format!("{name} shows no committed entry"));
        }
        if let Some(w) = log.windows(2).find(|w| w[1].index != w[0].index + 1) {
            return Some(format!(
                "{name}'s log jumps from index {} to {}",
                w[0].index, w[1].index
            ));
        }
    }
    for (i, (a_name, a)) in logs.iter().enumerate() {
        for (b_name, b) in &logs[i + 1..] {
            let by_index: BTreeMap<u64, &LogEntry> = b.iter().map(|e| (e.index, e)).collect();
            for x in a {
                if let Some(y) = by_index.get(&x.index) {
                    if x != *y {
                        return Some(format!(
                            "{a_name} and {b_name} differ at index {}: term {} `{}` vs term {} `{}`",
                            x.index, x.term, x.digest, y.term, y.digest
                        ));
                    }
                }
            }
            if let (Some(x), Some(y)) = (a.last(), b.last()) {
                if x != y {
                    return Some(format!(
                        "{a_name} ends at index {} (term {}), {b_name} at index {} (term {})",
                        x.index, x.term, y.index, y.term
                    ));
                }
            }
        }
    }
    None
}

/// Acknowledged decisions, as (index, digest), that the voters' final logs lost: a voter holds
/// the index with another digest (or skips it), or every voter's log ends before it. An index
/// a voter no longer holds (behind its snapshot) is not counted against that voter.
pub fn lost_decisions(acknowledged: &[(u64, String)], logs: &[VoterLog]) -> Vec<u64> {
    let mut lost: Vec<u64> = acknowledged
        .iter()
        .filter(|(index, digest)| {
            let rewritten = logs.iter().any(|(_, log)| {
                let (Some(first), Some(last)) = (log.first(), log.last()) else {
                    return false;
                };
                (first.index..=last.index).contains(index)
                    && !log.iter().any(|e| e.index == *index && &e.digest == digest)
            });
            let beyond_all = logs
                .iter()
                .all(|(_, log)| log.last().is_none_or(|e| e.index < *index));
            rewritten || beyond_all
        })
        .map(|(i, _)| *i)
        .collect();
    lost.dedup();
    lost
}
