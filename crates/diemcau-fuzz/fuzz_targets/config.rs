//! Configuration files: any text must load or give an error, never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = diemcau::Config::from_toml_str(text, "fuzz.toml");
    }
});
