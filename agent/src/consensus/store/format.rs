//! The decision log's format mark: a data directory written by a release whose log format
//! differs is refused at start with a clear error, instead of being misread.

use std::path::Path;

use plexus_protocol::frame::LOG_FORMAT;
use redb::{Database, ReadableDatabase, ReadableTableMetadata};

use super::{db_error, StoreError, LOG, META};

/// The key of the format mark in the meta table.
const FORMAT: &str = "format";

/// Checks the mark of the log in `db`, writing it into a log that holds nothing yet.
pub(super) fn check_or_mark(db: &Database, path: &Path) -> Result<(), StoreError> {
    let err = |e: redb::Error| db_error(path, e);
    let refused = |found: String| StoreError::Format {
        path: path.to_owned(),
        found,
    };
    {
        let txn = db.begin_read().map_err(|e| err(e.into()))?;
        let meta = match txn.open_table(META) {
            Ok(meta) => Some(meta),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(err(e.into())),
        };
        if let Some(meta) = &meta {
            match meta.get(FORMAT).map_err(|e| err(e.into()))? {
                Some(mark) if mark.value() == [LOG_FORMAT] => return Ok(()),
                Some(mark) => return Err(refused(format!("format mark {:?}", mark.value()))),
                None if !meta.is_empty().map_err(|e| err(e.into()))? => {
                    return Err(refused("no format mark: an older release".into()))
                }
                None => {}
            }
        }
        match txn.open_table(LOG) {
            Ok(log) if !log.is_empty().map_err(|e| err(e.into()))? => {
                return Err(refused("no format mark: an older release".into()))
            }
            Ok(_) | Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(err(e.into())),
        }
    }
    let txn = db.begin_write().map_err(|e| err(e.into()))?;
    txn.open_table(META)
        .map_err(|e| err(e.into()))?
        .insert(FORMAT, [LOG_FORMAT].as_slice())
        .map_err(|e| err(e.into()))?;
    txn.commit().map_err(|e| err(e.into()))
}
