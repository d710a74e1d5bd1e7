//! The rules parser on arbitrary text: it must return rules or an error, never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = model_slim::rules::parse("fuzz.rules", text);
    }
});
