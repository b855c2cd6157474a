//! Join tokens from URLs: any string must verify or be refused, never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = diemcau_store::token::verify(b"fuzz-secret", text, 1_800_000_000);
    }
});
