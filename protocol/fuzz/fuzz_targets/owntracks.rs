//! The OwnTracks decoder: never panics; whatever it accepts survives an
//! encode/decode round trip once quantised (whole seconds, whole km/h).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(loc) = protocol::owntracks::decode(data) {
        let once = protocol::owntracks::decode(&protocol::owntracks::encode(&loc))
            .expect("an accepted location re-encodes");
        let twice = protocol::owntracks::decode(&protocol::owntracks::encode(&once));
        assert_eq!(twice.as_ref(), Ok(&once));
    }
    let _ = protocol::decode("owntracks/alice/phone", data);
});
