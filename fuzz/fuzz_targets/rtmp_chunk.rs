//! Chunk stream reassembly: arbitrary bytes, fed in pieces whose sizes the input chooses.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rtmp::chunk::{ChunkDecoder, ChunkLimits};

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let step = usize::from(split).max(1);
    let mut dec = ChunkDecoder::new(ChunkLimits { max_message_size: 1 << 20, max_chunk_streams: 16 });
    for piece in rest.chunks(step) {
        dec.push(piece);
        loop {
            match dec.next_message() {
                Ok(Some(m)) => assert!(m.payload.len() <= 1 << 20),
                Ok(None) => break,
                Err(_) => return,
            }
        }
        // Partial messages are bounded by the limits, whatever the input claims.
        assert!(dec.buffered() <= rest.len() + 16 * (1 << 20));
    }
});
