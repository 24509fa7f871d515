//! raft-rs logs through `slog`; this drain forwards its records to `tracing` (target
//! `plexus::raft`), with the record's key-value pairs appended to the message.

use std::fmt::Write as _;

use slog::{Drain, Key, OwnedKVList, Record, Serializer, KV};

/// A `slog::Logger` whose records become `tracing` events.
pub fn raft_logger(node: &str) -> slog::Logger {
    slog::Logger::root(TracingDrain.fuse(), slog::o!("node" => node.to_owned()))
}

struct TracingDrain;

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        let mut text = record.msg().to_string();
        let mut fields = Fields(&mut text);
        let _ = record.kv().serialize(record, &mut fields);
        let _ = values.serialize(record, &mut fields);
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "plexus::raft", "{text}")
            }
            slog::Level::Warning => tracing::warn!(target: "plexus::raft", "{text}"),
            slog::Level::Info => tracing::info!(target: "plexus::raft", "{text}"),
            slog::Level::Debug => tracing::debug!(target: "plexus::raft", "{text}"),
            slog::Level::Trace => tracing::trace!(target: "plexus::raft", "{text}"),
        }
        Ok(())
    }
}

struct Fields<'a>(&'a mut String);

impl Serializer for Fields<'_> {
    fn emit_arguments(&mut self, key: Key, value: &std::fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={value}");
        Ok(())
    }
}
