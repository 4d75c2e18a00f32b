//! The emtrack JSON decoder, also through `protocol::decode` with a topic:
//! never panics; whatever it accepts survives an encode/decode round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = protocol::json::decode(data) {
        let again = protocol::json::decode(&protocol::json::encode(&msg));
        assert_eq!(again.as_ref(), Ok(&msg));
    }
    let _ = protocol::decode("em/v1/dev/EM-1/fix", data);
});
