//! Signalling messages from the WebSocket: any text must parse or fail, never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = diemcau_proto::ClientMsg::parse(text);
    }
});
