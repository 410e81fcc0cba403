//! What the gateway's unit tests share.

/// Random edits of valid inputs (a tiny deterministic xorshift, no rand crate): the property
/// tests that run the fuzz targets' invariants without libFuzzer.
pub struct Mutator {
    x: u64,
}

impl Mutator {
    pub fn new(seed: u64) -> Self {
        Self { x: seed }
    }

    fn next(&mut self) -> u64 {
        self.x ^= self.x << 13;
        self.x ^= self.x >> 7;
        self.x ^= self.x << 17;
        self.x
    }

    /// `input` with 1 to `max_edits` bytes replaced, removed or inserted (from `alphabet`).
    pub fn mutate(&mut self, input: &[u8], alphabet: &[u8], max_edits: u64) -> Vec<u8> {
        let mut b = input.to_vec();
        for _ in 0..1 + self.next() % max_edits {
            let at = (self.next() as usize) % (b.len() + 1);
            let c = alphabet[(self.next() as usize) % alphabet.len()];
            match self.next() % 3 {
                0 if at < b.len() => b[at] = c,
                1 if at < b.len() => {
                    b.remove(at);
                }
                _ => b.insert(at, c),
            }
        }
        b
    }
}
