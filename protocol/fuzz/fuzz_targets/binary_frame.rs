//! The binary frame decoder: never panics; whatever it accepts re-encodes to the
//! same bytes and decodes to the same message.
//!
//! Each input is tried twice: as it is, and with its last four bytes replaced by
//! the CRC of the rest, so that mutations reach the field checks behind the CRC.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::bytes::BytesMut;

fn check(data: &[u8]) {
    if let Ok(msg) = protocol::binary::decode(data) {
        let mut buf = BytesMut::new();
        protocol::binary::encode(&msg, &mut buf).expect("a decoded frame re-encodes");
        assert_eq!(protocol::binary::decode(&buf).as_ref(), Ok(&msg));
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() >= 4 {
        let mut fixed = data.to_vec();
        let n = fixed.len() - 4;
        let crc = crc32fast::hash(&fixed[..n]);
        fixed[n..].copy_from_slice(&crc.to_be_bytes());
        check(&fixed);
    }
});
