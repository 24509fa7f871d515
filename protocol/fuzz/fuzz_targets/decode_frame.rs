#![no_main]
//! Any bytes: frame decoding returns a frame or an error, and a decoded frame re-encodes to the
//! bytes it came from.
use libfuzzer_sys::fuzz_target;
use plexus_protocol::Frame;

fuzz_target!(|data: &[u8]| {
    if let Ok((frame, used)) = Frame::decode(data) {
        assert_eq!(frame.encode(), &data[..used]);
    }
});
