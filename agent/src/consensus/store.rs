//! The decision log on disk: raft-rs's [`raft::Storage`] over an in-memory log that every write
//! mirrors to a redb database under `data_dir`.
//!
//! redb because it is a pure-Rust embedded store with ACID transactions and fsync on commit
//! (`Durability::Immediate`): one transaction per Raft `Ready` writes the new entries, the hard
//! state and the applied state together, so a kill -9 at any point leaves either all or none of
//! a step on disk. raft-engine would fit a log with millions of entries; ours holds a few hundred
//! small decisions between compactions, and redb's one file is simpler to reason about.
//!
//! Everything is stored in the project's own encoding (bincode of [`RaftEntry`], the hard state
//! and [`SnapshotRecord`]); protobuf never parses anything read back from disk either.
//!
//! The snapshot is the last *applied* state: the committed decisions as of `index`, with the
//! configuration at that index. It is rewritten whenever entries are applied, so a lagging or new
//! voter can always be sent one, and entries up to it can be dropped (compaction keeps
//! [`KEEP_ENTRIES`] behind it for followers that are only a little behind).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use plexus_protocol::{RaftConfState, RaftEntry};
use raft::eraftpb::{Entry, HardState, Snapshot};
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

use super::wire::{conf_to_wire, entry_from_wire, entry_to_wire};
use crate::worker::off_the_worker;

mod format;
mod storage;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const HARD_STATE: &str = "hard_state";
const SNAPSHOT: &str = "snapshot";
const LEARNED: &str = "learned";
const REMOVED: &str = "removed";
/// Entries kept behind the snapshot after compaction.
pub const KEEP_ENTRIES: u64 = 256;
/// Compaction runs once this many entries are behind the snapshot.
const COMPACT_AFTER: u64 = 2 * KEEP_ENTRIES;
/// Largest record read back from disk.
const MAX_RECORD: usize = 1 << 20;

/// Why the decision log could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("decision log {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },
    #[error("decision log {path}: record {key} is damaged: {reason}")]
    Damaged {
        path: PathBuf,
        key: String,
        reason: String,
    },
    #[error(
        "decision log {path} was written by another release of plexus ({found}); this build \
         keeps log format {format}: run the release that wrote it, or move the file aside to \
         start this node's log empty",
        format = plexus_protocol::frame::LOG_FORMAT
    )]
    Format { path: PathBuf, found: String },
    #[error("cannot create {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The hard state as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct HardRecord {
    term: u64,
    vote: u64,
    commit: u64,
}

/// The last applied state, which doubles as the Raft snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub index: u64,
    pub term: u64,
    pub conf: RaftConfState,
    /// The encoded [`plexus_protocol::CommittedState`] as of `index`.
    pub data: Vec<u8>,
}

/// One Raft step's worth of writes, committed in one transaction.
#[derive(Default)]
pub struct Batch<'a> {
    /// New entries; they replace any stored entries from their first index on.
    pub entries: &'a [Entry],
    pub hard_state: Option<HardState>,
    /// A snapshot received from the leader: replaces the whole log.
    pub received: Option<SnapshotRecord>,
    /// The state applied after this step.
    pub applied: Option<SnapshotRecord>,
}

#[derive(Default)]
struct LogCore {
    hard: HardRecord,
    snapshot: SnapshotRecord,
    entries: Vec<Entry>,
    /// The committed state a non-voter last learned from gossip (encoded).
    learned: Option<Vec<u8>>,
    /// This node was removed from the group (only the leader may add it back).
    removed: bool,
}

impl LogCore {
    fn first_index(&self) -> u64 {
        self.entries
            .first()
            .map_or(self.snapshot.index + 1, |e| e.index)
    }

    fn last_index(&self) -> u64 {
        self.entries.last().map_or(self.snapshot.index, |e| e.index)
    }
}

/// The decision log: raft-rs reads it through [`raft::Storage`]; the driver writes it with
/// [`LogStore::persist`]. Cloning shares the same log.
#[derive(Clone)]
pub struct LogStore {
    core: Arc<RwLock<LogCore>>,
    db: Arc<Database>,
    path: PathBuf,
}

impl LogStore {
    /// Opens (or creates) the log in `dir/decisions.redb` and reads it into memory. The
    /// committed state holds the mesh CA's keys on voters, so the directory is made 0700 and
    /// the file is kept 0600 (an existing one is narrowed to that).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        let dir_error = |path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::Dir { path, source }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(dir_error(dir))?;
        let path = dir.join("decisions.redb");
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .and_then(|_| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)))
            .map_err(dir_error(&path))?;
        let db = Database::create(&path).map_err(|e| db_error(&path, e))?;
        format::check_or_mark(&db, &path)?;
        let store = Self {
            core: Arc::default(),
            db: Arc::new(db),
            path,
        };
        store.load()?;
        Ok(store)
    }

    /// A log kept in memory only: for an agent with no `[consensus]` and no `data_dir`, which
    /// never votes and keeps what it learns from gossip until it stops.
    pub fn in_memory() -> Result<Self, StoreError> {
        let path = PathBuf::from("(memory)");
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| db_error(&path, e))?;
        Ok(Self {
            core: Arc::default(),
            db: Arc::new(db),
            path,
        })
    }

    fn load(&self) -> Result<(), StoreError> {
        let err = |e: redb::Error| db_error(&self.path, e);
        let txn = self.db.begin_read().map_err(|e| err(e.into()))?;
        let mut core = LogCore::default();
        match txn.open_table(META) {
            Ok(meta) => {
                if let Some(bytes) = meta.get(HARD_STATE).map_err(|e| err(e.into()))? {
                    core.hard = self.decode(HARD_STATE, bytes.value())?;
                }
                if let Some(bytes) = meta.get(SNAPSHOT).map_err(|e| err(e.into()))? {
                    core.snapshot = self.decode(SNAPSHOT, bytes.value())?;
                }
                if let Some(bytes) = meta.get(LEARNED).map_err(|e| err(e.into()))? {
                    core.learned = Some(bytes.value().to_vec());
                }
                core.removed = meta.get(REMOVED).map_err(|e| err(e.into()))?.is_some();
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(err(e.into())),
        }
        match txn.open_table(LOG) {
            Ok(log) => {
                for row in log.range(0..).map_err(|e| err(e.into()))? {
                    let (index, bytes) = row.map_err(|e| err(e.into()))?;
                    let entry: RaftEntry =
                        self.decode(&format!("entry {}", index.value()), bytes.value())?;
                    core.entries.push(entry_from_wire(entry));
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(err(e.into())),
        }
        if let Some(gap) = core
            .entries
            .windows(2)
            .find(|pair| pair[1].index != pair[0].index + 1)
        {
            return Err(StoreError::Damaged {
                path: self.path.clone(),
                key: format!("entry {}", gap[1].index),
                reason: format!("gap after entry {}", gap[0].index),
            });
        }
        *self.core.write().expect("log lock poisoned") = core;
        Ok(())
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        bytes: &[u8],
    ) -> Result<T, StoreError> {
        plexus_protocol::frame::decode_record(bytes, MAX_RECORD).map_err(|reason| {
            StoreError::Damaged {
                path: self.path.clone(),
                key: key.to_owned(),
                reason,
            }
        })
    }

    /// Whether this node holds any Raft state (it was bootstrapped or has been sent a snapshot).
    pub fn initialized(&self) -> bool {
        let core = self.core.read().expect("log lock poisoned");
        // A node that has voted holds a term: bootstrapping must never lower it.
        !core.snapshot.conf.voters.is_empty() || core.snapshot.index > 0 || core.hard.term > 0
    }

    /// The last applied state (the snapshot record).
    pub fn applied(&self) -> SnapshotRecord {
        self.core
            .read()
            .expect("log lock poisoned")
            .snapshot
            .clone()
    }

    /// The committed state last learned from gossip, if this node is not in the group.
    pub fn learned(&self) -> Option<Vec<u8>> {
        self.core.read().expect("log lock poisoned").learned.clone()
    }

    /// Keeps a committed state learned from gossip, so a restarted non-voter serves with it.
    pub fn persist_learned(&self, data: Vec<u8>) -> Result<(), StoreError> {
        let err = |e: redb::Error| db_error(&self.path, e);
        let txn = self.db.begin_write().map_err(|e| err(e.into()))?;
        txn.open_table(META)
            .map_err(|e| err(e.into()))?
            .insert(LEARNED, data.as_slice())
            .map_err(|e| err(e.into()))?;
        off_the_worker(|| txn.commit()).map_err(|e| err(e.into()))?;
        self.core.write().expect("log lock poisoned").learned = Some(data);
        Ok(())
    }

    /// Forgets the Raft state (log, hard state, snapshot) of a node removed from the group,
    /// keeping its last applied state as learned, so it serves with it and can be added again
    /// later as a new, empty node.
    pub fn reset(&self) -> Result<(), StoreError> {
        let err = |e: redb::Error| db_error(&self.path, e);
        let mut core = self.core.write().expect("log lock poisoned");
        let learned = core.snapshot.data.clone();
        let txn = self.db.begin_write().map_err(|e| err(e.into()))?;
        {
            txn.open_table(LOG)
                .map_err(|e| err(e.into()))?
                .retain(|_, _| false)
                .map_err(|e| err(e.into()))?;
            let mut meta = txn.open_table(META).map_err(|e| err(e.into()))?;
            meta.remove(HARD_STATE).map_err(|e| err(e.into()))?;
            meta.remove(SNAPSHOT).map_err(|e| err(e.into()))?;
            meta.insert(LEARNED, learned.as_slice())
                .map_err(|e| err(e.into()))?;
            meta.insert(REMOVED, &[1u8][..])
                .map_err(|e| err(e.into()))?;
        }
        txn.commit().map_err(|e| err(e.into()))?;
        *core = LogCore {
            learned: Some(learned),
            removed: true,
            ..LogCore::default()
        };
        Ok(())
    }

    /// Whether this node was removed from the group (see [`LogStore::reset`]).
    pub fn was_removed(&self) -> bool {
        self.core.read().expect("log lock poisoned").removed
    }

    /// The hard state's commit index.
    pub fn commit(&self) -> u64 {
        self.core.read().expect("log lock poisoned").hard.commit
    }

    /// Up to `max` entries ending at `upto` (inclusive), oldest first.
    pub fn tail(&self, upto: u64, max: usize) -> Vec<RaftEntry> {
        let core = self.core.read().expect("log lock poisoned");
        let end = core.entries.partition_point(|e| e.index <= upto);
        core.entries[end.saturating_sub(max)..end]
            .iter()
            .map(entry_to_wire)
            .collect()
    }

    /// Writes a new group's first state: a snapshot at index 1, term 1, whose configuration
    /// is `voters` and whose data is the initial committed state.
    pub fn bootstrap(&self, voters: Vec<u64>, data: Vec<u8>) -> Result<(), StoreError> {
        let record = SnapshotRecord {
            index: 1,
            term: 1,
            conf: RaftConfState {
                voters,
                ..RaftConfState::default()
            },
            data,
        };
        let hard = HardState {
            term: 1,
            commit: 1,
            ..HardState::default()
        };
        self.persist(Batch {
            received: Some(record),
            hard_state: Some(hard),
            ..Batch::default()
        })
    }

    /// Commits one step's writes to disk (fsync), then to memory. A step with nothing to keep
    /// (a heartbeat) writes nothing.
    pub fn persist(&self, batch: Batch<'_>) -> Result<(), StoreError> {
        if batch.entries.is_empty()
            && batch.hard_state.is_none()
            && batch.received.is_none()
            && batch.applied.is_none()
        {
            return Ok(());
        }
        let snapshot_changed = batch.received.is_some() || batch.applied.is_some();
        // Read, not write: the driver is the only writer, and readers (the admin API) must not
        // wait out the fsync below; the new state is swapped in after it.
        let core = self.core.read().expect("log lock poisoned");
        let mut next = LogCore {
            hard: core.hard,
            snapshot: core.snapshot.clone(),
            entries: Vec::new(),
            learned: core.learned.clone(),
            removed: core.removed,
        };
        let err = |e: redb::Error| db_error(&self.path, e);
        let txn = self.db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut log = txn.open_table(LOG).map_err(|e| err(e.into()))?;
            let mut meta = txn.open_table(META).map_err(|e| err(e.into()))?;
            // A copy: on any error the in-memory log stays as it was (a few hundred entries).
            let mut entries = core.entries.clone();
            if let Some(received) = batch.received {
                entries.clear();
                log.retain(|_, _| false).map_err(|e| err(e.into()))?;
                next.hard.term = next.hard.term.max(received.term);
                next.hard.commit = next.hard.commit.max(received.index);
                next.snapshot = received;
            }
            if let Some(first) = batch.entries.first() {
                let last_kept = first.index.saturating_sub(1);
                entries.retain(|e| e.index <= last_kept);
                log.retain_in(first.index.., |_, _| false)
                    .map_err(|e| err(e.into()))?;
                for entry in batch.entries {
                    let bytes = encode(&entry_to_wire(entry));
                    log.insert(entry.index, bytes.as_slice())
                        .map_err(|e| err(e.into()))?;
                    entries.push(entry.clone());
                }
            }
            if let Some(hard) = batch.hard_state {
                next.hard = HardRecord {
                    term: hard.term,
                    vote: hard.vote,
                    commit: hard.commit.max(next.hard.commit),
                };
            }
            if let Some(applied) = batch.applied {
                next.hard.commit = next.hard.commit.max(applied.index);
                next.snapshot = applied;
            }
            let behind = next.snapshot.index.saturating_sub(KEEP_ENTRIES);
            if entries
                .first()
                .is_some_and(|e| e.index + COMPACT_AFTER <= next.snapshot.index)
            {
                entries.retain(|e| e.index > behind);
                log.retain_in(..=behind, |_, _| false)
                    .map_err(|e| err(e.into()))?;
            }
            if next.hard != core.hard {
                meta.insert(HARD_STATE, encode(&next.hard).as_slice())
                    .map_err(|e| err(e.into()))?;
            }
            if snapshot_changed {
                meta.insert(SNAPSHOT, encode(&next.snapshot).as_slice())
                    .map_err(|e| err(e.into()))?;
            }
            next.entries = entries;
        }
        drop(core);
        match off_the_worker(|| txn.commit()) {
            Ok(()) => {
                *self.core.write().expect("log lock poisoned") = next;
                Ok(())
            }
            Err(e) => Err(err(e.into())),
        }
    }
}

/// The record a received snapshot becomes.
pub fn record_of(snapshot: &Snapshot) -> SnapshotRecord {
    let meta = snapshot.get_metadata();
    SnapshotRecord {
        index: meta.index,
        term: meta.term,
        conf: conf_to_wire(meta.get_conf_state()),
        data: snapshot.data.to_vec(),
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    plexus_protocol::frame::encode_record(value)
}

fn db_error(path: &Path, source: impl Into<redb::Error>) -> StoreError {
    StoreError::Db {
        path: path.to_owned(),
        source: source.into(),
    }
}

#[cfg(test)]
mod tests;
