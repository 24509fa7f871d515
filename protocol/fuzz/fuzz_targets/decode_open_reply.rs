#![no_main]
//! Any payload: open-reply decoding is total.
use libfuzzer_sys::fuzz_target;
use plexus_protocol::frame::FrameMessage;
use plexus_protocol::OpenReply;

fuzz_target!(|data: &[u8]| {
    let _ = OpenReply::from_payload(data);
});
