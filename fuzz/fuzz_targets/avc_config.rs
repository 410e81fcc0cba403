//! AVCDecoderConfigurationRecord, SPS, AudioSpecificConfig and NAL unit iteration.
#![no_main]
use libfuzzer_sys::fuzz_target;
use media::avc::{annexb_to_avcc, avcc_to_annexb, nal_units, parse_sps, AvcDecoderConfig};

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = AvcDecoderConfig::parse(data) {
        let _ = rec.info();
        let bytes = rec.to_bytes();
        assert_eq!(AvcDecoderConfig::parse(&bytes).ok().map(|r| r.sps.len()), Some(rec.sps.len().min(31)));
    }
    let _ = parse_sps(data);
    let _ = media::aac::AacInfo::parse(data);
    for n in nal_units(data, 4) {
        if n.is_err() {
            break;
        }
    }
    let avcc = annexb_to_avcc(data);
    assert!(avcc_to_annexb(&avcc, 4).is_ok());
});
