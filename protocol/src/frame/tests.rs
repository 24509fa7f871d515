use proptest::prelude::*;

use super::*;
use crate::identity::ServiceName;
use crate::stream::{OpenReply, Refusal, StreamHeader};

fn header(service: &str) -> StreamHeader {
    StreamHeader {
        service: ServiceName::new(service).unwrap(),
        open_budget_ms: 2000,
        protocol: crate::AppProtocol::Tcp,
    }
}

#[test]
fn stream_header_round_trips() {
    let bytes = header("payments").to_frame_bytes();
    let (frame, used) = Frame::decode(&bytes).unwrap();
    assert_eq!(used, bytes.len());
    assert_eq!(
        StreamHeader::from_frame(&frame).unwrap(),
        header("payments")
    );
}

#[test]
fn truncated_input_asks_for_more() {
    let bytes = header("payments").to_frame_bytes();
    for cut in 0..bytes.len() {
        match Frame::decode(&bytes[..cut]) {
            Err(FrameError::Truncated { needed }) => assert!(needed > 0),
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

#[test]
fn header_refuses_bad_magic_version_type_and_length() {
    let good = FrameHeader {
        frame_type: FrameType::OpenStream,
        payload_len: 3,
    }
    .encode();
    let mut bad = good;
    bad[0] = b'Q';
    assert!(matches!(
        FrameHeader::decode(&bad),
        Err(FrameError::BadMagic { .. })
    ));
    let mut bad = good;
    bad[2] = 9;
    assert_eq!(
        FrameHeader::decode(&bad),
        Err(FrameError::UnsupportedVersion(9))
    );
    let mut bad = good;
    bad[3] = 200;
    assert_eq!(FrameHeader::decode(&bad), Err(FrameError::UnknownType(200)));
    let mut bad = good;
    bad[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        FrameHeader::decode(&bad),
        Err(FrameError::Oversized { .. })
    ));
}

#[test]
fn oversized_length_is_refused_without_the_payload() {
    let header = [b'P', b'X', VERSION, 1, 0x7f, 0xff, 0xff, 0xff];
    assert!(matches!(
        Frame::decode(&header),
        Err(FrameError::Oversized { .. })
    ));
}

#[test]
fn payload_checks_type_trailing_bytes_and_names() {
    let reply = Frame::decode(&OpenReply::Accepted.to_frame_bytes())
        .unwrap()
        .0;
    assert!(matches!(
        StreamHeader::from_frame(&reply),
        Err(FrameError::UnexpectedType { .. })
    ));

    let mut payload = header("a").to_frame_bytes()[FRAME_HEADER_LEN..].to_vec();
    payload.push(0);
    assert!(matches!(
        StreamHeader::from_payload(&payload),
        Err(FrameError::Malformed { .. })
    ));

    // A name that serde would accept but our syntax refuses: "a b".
    let payload = bincode::serde::encode_to_vec("a b", bincode_config()).unwrap();
    assert!(matches!(
        StreamHeader::from_payload(&payload),
        Err(FrameError::Malformed { .. })
    ));
}

#[test]
fn a_huge_declared_string_length_does_not_allocate() {
    // bincode varint: 0xfd then a u64 length of 2^60; the limit refuses it before allocating.
    let mut payload = vec![0xfd];
    payload.extend_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(matches!(
        StreamHeader::from_payload(&payload),
        Err(FrameError::Malformed { .. })
    ));
}

fn any_refusal() -> impl Strategy<Value = Refusal> {
    prop_oneof![
        Just(Refusal::UnknownService),
        Just(Refusal::LocalConnectRefused),
        Just(Refusal::LocalConnectTimeout),
        Just(Refusal::LocalConnectFailed),
        Just(Refusal::Overloaded),
    ]
}

proptest! {
    #[test]
    fn encode_then_decode_is_identity(
        service in "[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}",
        open_budget_ms in any::<u32>(),
    ) {
        let sent = StreamHeader { open_budget_ms, ..header(&service) };
        let bytes = sent.to_frame_bytes();
        let (frame, used) = Frame::decode(&bytes).unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(StreamHeader::from_frame(&frame).unwrap(), sent);
    }

    #[test]
    fn replies_round_trip(refusal in any_refusal(), accepted in any::<bool>()) {
        let sent = if accepted { OpenReply::Accepted } else { OpenReply::Refused(refusal) };
        let (frame, _) = Frame::decode(&sent.to_frame_bytes()).unwrap();
        prop_assert_eq!(OpenReply::from_frame(&frame).unwrap(), sent);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok((frame, used)) = Frame::decode(&bytes) {
            prop_assert!(used <= bytes.len());
            let _ = StreamHeader::from_frame(&frame);
            let _ = OpenReply::from_frame(&frame);
        }
        let _ = StreamHeader::from_payload(&bytes);
        let _ = OpenReply::from_payload(&bytes);
    }

    #[test]
    fn random_payloads_behind_a_valid_header_never_panic(
        kind in 1u8..=2,
        payload in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut bytes = vec![b'P', b'X', VERSION, kind];
        bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&payload);
        let (frame, _) = Frame::decode(&bytes).unwrap();
        let _ = StreamHeader::from_frame(&frame);
        let _ = OpenReply::from_frame(&frame);
    }
}
