//! VP8 payload descriptors from publishers' RTP: any bytes must parse or be refused, never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = diemcau_media::vp8::parse(data);
});
