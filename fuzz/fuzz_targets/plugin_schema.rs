//! Fuzzes the check of a plugin call's arguments against its manifest's input schema
//! (aura-plugin's `schema`, without the runtime): any JSON schema and any JSON arguments,
//! split from the input at its first NUL byte, get an answer and never a panic or a stack
//! overflow.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (schema, arguments) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"{}"[..]),
    };
    let (Ok(schema), Ok(arguments)) = (
        serde_json::from_slice::<serde_json::Value>(schema),
        serde_json::from_slice::<serde_json::Value>(arguments),
    ) else {
        return;
    };
    if let Err(e) = aura_plugin::schema::check(&schema, &arguments) {
        assert!(e.at.starts_with('/'), "{e}");
    }
});
