//! AMF0 decoding, and re-encoding whatever decoded.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(values) = rtmp::amf0::decode_all(data) {
        let again = rtmp::amf0::encode_all(&values);
        let back = rtmp::amf0::decode_all(&again).expect("our own encoding decodes");
        assert_eq!(back.len(), values.len());
    }
});
