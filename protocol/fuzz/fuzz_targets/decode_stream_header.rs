#![no_main]
//! Any payload: stream header decoding is total, and what decodes survives a round trip.
use libfuzzer_sys::fuzz_target;
use plexus_protocol::frame::FrameMessage;
use plexus_protocol::{Frame, StreamHeader};

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = StreamHeader::from_payload(data) {
        let (frame, _) = Frame::decode(&header.to_frame_bytes()).unwrap();
        assert_eq!(StreamHeader::from_frame(&frame).unwrap(), header);
    }
});
