use bytes::Bytes;
use raft::{GetEntriesContext, Storage, StorageError};

use super::*;

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term,
        index,
        data: Bytes::from(format!("decision {index}")),
        ..Entry::default()
    }
}

fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range.map(|i| entry(i, term)).collect()
}

#[test]
fn entries_and_hard_state_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = LogStore::open(dir.path()).unwrap();
        assert!(!store.initialized());
        store.bootstrap(vec![1, 2, 3], b"state".to_vec()).unwrap();
        store
            .persist(Batch {
                entries: &entries(2..=5, 2),
                hard_state: Some(HardState {
                    term: 2,
                    vote: 1,
                    commit: 4,
                    ..HardState::default()
                }),
                ..Batch::default()
            })
            .unwrap();
    }
    let store = LogStore::open(dir.path()).unwrap();
    assert!(store.initialized());
    let state = store.initial_state().unwrap();
    assert_eq!(
        (
            state.hard_state.term,
            state.hard_state.vote,
            state.hard_state.commit
        ),
        (2, 1, 4)
    );
    assert_eq!(state.conf_state.voters, vec![1, 2, 3]);
    assert_eq!(store.first_index().unwrap(), 2);
    assert_eq!(store.last_index().unwrap(), 5);
    assert_eq!(store.term(1).unwrap(), 1);
    let read = store
        .entries(2, 6, None, GetEntriesContext::empty(false))
        .unwrap();
    assert_eq!(read, entries(2..=5, 2));
}

#[test]
fn new_entries_replace_a_conflicting_suffix_on_disk_too() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = LogStore::open(dir.path()).unwrap();
        store.bootstrap(vec![1], Vec::new()).unwrap();
        store
            .persist(Batch {
                entries: &entries(2..=6, 2),
                ..Batch::default()
            })
            .unwrap();
        store
            .persist(Batch {
                entries: &entries(4..=4, 3),
                ..Batch::default()
            })
            .unwrap();
        assert_eq!(store.last_index().unwrap(), 4);
    }
    let store = LogStore::open(dir.path()).unwrap();
    assert_eq!(store.last_index().unwrap(), 4);
    assert_eq!(store.term(4).unwrap(), 3);
    assert_eq!(store.term(3).unwrap(), 2);
}

#[test]
fn compaction_keeps_a_tail_behind_the_applied_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path()).unwrap();
    store.bootstrap(vec![1], Vec::new()).unwrap();
    let last = 2 + 3 * KEEP_ENTRIES;
    store
        .persist(Batch {
            entries: &entries(2..=last, 2),
            applied: Some(SnapshotRecord {
                index: last,
                term: 2,
                conf: RaftConfState {
                    voters: vec![1],
                    ..RaftConfState::default()
                },
                data: b"applied".to_vec(),
            }),
            ..Batch::default()
        })
        .unwrap();
    assert_eq!(store.first_index().unwrap(), last - KEEP_ENTRIES + 1);
    assert_eq!(
        store.entries(2, 3, None, GetEntriesContext::empty(false)),
        Err(raft::Error::Store(StorageError::Compacted))
    );
    let snapshot = store.snapshot(0, 2).unwrap();
    assert_eq!(snapshot.get_metadata().index, last);
    assert_eq!(&snapshot.data[..], b"applied");
    drop(store);
    let store = LogStore::open(dir.path()).unwrap();
    assert_eq!(store.first_index().unwrap(), last - KEEP_ENTRIES + 1);
    assert_eq!(store.applied().data, b"applied");
}

#[test]
fn a_received_snapshot_replaces_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path()).unwrap();
    store
        .persist(Batch {
            received: Some(SnapshotRecord {
                index: 40,
                term: 3,
                conf: RaftConfState {
                    voters: vec![1, 2, 3],
                    ..RaftConfState::default()
                },
                data: b"theirs".to_vec(),
            }),
            ..Batch::default()
        })
        .unwrap();
    assert!(store.initialized());
    assert_eq!(store.first_index().unwrap(), 41);
    assert_eq!(store.last_index().unwrap(), 40);
    assert_eq!(store.term(40).unwrap(), 3);
    assert_eq!(store.initial_state().unwrap().hard_state.commit, 40);
}

#[test]
fn a_damaged_record_is_an_error_naming_the_file_and_record() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = LogStore::open(dir.path()).unwrap();
        store.bootstrap(vec![1], Vec::new()).unwrap();
        let txn = store.db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(SNAPSHOT, &[0xff, 0xff, 0xff][..])
            .unwrap();
        txn.commit().unwrap();
    }
    let error = LogStore::open(dir.path()).err().unwrap().to_string();
    assert!(error.contains("decisions.redb"), "{error}");
    assert!(error.contains("snapshot"), "{error}");
}

#[test]
fn a_log_of_another_format_or_without_a_mark_is_refused_and_left_alone() {
    for mark in [Some(&[plexus_protocol::frame::LOG_FORMAT + 1][..]), None] {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = LogStore::open(dir.path()).unwrap();
            store.bootstrap(vec![1], Vec::new()).unwrap();
            let txn = store.db.begin_write().unwrap();
            {
                let mut meta = txn.open_table(META).unwrap();
                match mark {
                    Some(mark) => meta.insert("format", mark).unwrap(),
                    None => meta.remove("format").unwrap(),
                };
            }
            txn.commit().unwrap();
        }
        let error = LogStore::open(dir.path()).err().unwrap().to_string();
        assert!(error.contains("decisions.redb"), "{error}");
        assert!(error.contains("another release"), "{error}");
        // Refused, not rewritten: the release that wrote it can still read it.
        let db = Database::create(dir.path().join("decisions.redb")).unwrap();
        let txn = db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        assert_eq!(
            meta.get("format").unwrap().map(|m| m.value().to_vec()),
            mark.map(<[u8]>::to_vec)
        );
        assert!(meta.get(HARD_STATE).unwrap().is_some());
    }
    // A new log is marked, and reopens.
    let dir = tempfile::tempdir().unwrap();
    drop(LogStore::open(dir.path()).unwrap());
    LogStore::open(dir.path()).unwrap();
}

#[test]
fn a_reset_forgets_the_raft_state_but_keeps_what_was_applied() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = LogStore::open(dir.path()).unwrap();
        store
            .bootstrap(vec![1, 2, 3], b"applied state".to_vec())
            .unwrap();
        store
            .persist(Batch {
                entries: &entries(2..=4, 2),
                ..Batch::default()
            })
            .unwrap();
        store.reset().unwrap();
        assert!(!store.initialized());
        assert_eq!(store.last_index().unwrap(), 0);
    }
    let store = LogStore::open(dir.path()).unwrap();
    assert!(!store.initialized());
    assert!(
        store.was_removed(),
        "a removed node must be added back by the leader"
    );
    assert!(store.initial_state().unwrap().conf_state.voters.is_empty());
    assert_eq!(store.learned().as_deref(), Some(&b"applied state"[..]));
}

#[test]
fn the_log_holding_ca_keys_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("consensus");
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    drop(LogStore::open(&dir).unwrap());
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("decisions.redb")), 0o600);
    // A log left readable by an older version is narrowed when opened.
    let file = dir.join("decisions.redb");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = LogStore::open(&dir).unwrap();
    assert!(!store.initialized());
    assert_eq!(mode(&file), 0o600);
}
