#![no_main]
//! Any text: SPIFFE ID parsing is total, and what parses prints back to the same text.
use libfuzzer_sys::fuzz_target;
use plexus_protocol::SpiffeId;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(id) = text.parse::<SpiffeId>() {
            assert_eq!(id.to_string(), text);
        }
    }
});
