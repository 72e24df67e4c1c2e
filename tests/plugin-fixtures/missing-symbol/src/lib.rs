//! Plugin-host test fixture: a shared library that is not a concentrator plugin (no declaration symbol).

/// Something a shared library might export.
#[unsafe(no_mangle)]
pub extern "C" fn fixture_answer() -> u32 {
    42
}
