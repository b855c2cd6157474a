//! RED (RFC 2198) audio payloads from publishers' RTP: the bridge unwraps them; any bytes, any sequence numbers, must
//! give packets or nothing, never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut r = diemcau_media::red::RedReceiver::default();
    // The first bytes choose the sequence numbers (late, repeated, jumping), the rest are payloads.
    let mut seq = 1_000u64;
    for chunk in data.chunks(64) {
        let step = u64::from(chunk.first().copied().unwrap_or(1) % 5);
        seq = if step == 4 { seq.saturating_sub(3) } else { seq + step };
        for (s, _, p) in r.unwrap(seq, seq as u32 * 960, chunk) {
            assert!(s <= seq && s + 8 >= seq && p.len() <= chunk.len());
        }
    }
});
