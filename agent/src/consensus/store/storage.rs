//! How raft-rs reads the decision log: [`Storage`] over the entries, hard state and snapshot
//! [`LogStore`] keeps in memory alongside the disk.

use bytes::Bytes;
use raft::eraftpb::{Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use super::super::wire::conf_from_wire;
use super::LogStore;

impl Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let core = self.core.read().expect("log lock poisoned");
        let hard_state = HardState {
            term: core.hard.term,
            vote: core.hard.vote,
            commit: core.hard.commit,
            ..HardState::default()
        };
        Ok(RaftState::new(
            hard_state,
            conf_from_wire(core.snapshot.conf.clone()),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let core = self.core.read().expect("log lock poisoned");
        if low < core.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > core.last_index() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let offset = core.first_index();
        let mut entries = core.entries[(low - offset) as usize..(high - offset) as usize].to_vec();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        let core = self.core.read().expect("log lock poisoned");
        if index == core.snapshot.index {
            return Ok(core.snapshot.term);
        }
        let offset = core.first_index();
        if index < offset {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if index > core.last_index() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(core.entries[(index - offset) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.core.read().expect("log lock poisoned").first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.core.read().expect("log lock poisoned").last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let core = self.core.read().expect("log lock poisoned");
        if core.snapshot.index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let mut snapshot = Snapshot::default();
        snapshot.set_data(Bytes::from(core.snapshot.data.clone()));
        let meta = snapshot.mut_metadata();
        meta.index = core.snapshot.index;
        meta.term = core.snapshot.term;
        meta.set_conf_state(conf_from_wire(core.snapshot.conf.clone()));
        Ok(snapshot)
    }
}
