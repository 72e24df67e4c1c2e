//! Hardware-in-the-loop tests on a real Raspberry Pi (tests/hil/README.md). The tests are in
//! `tests/pi.rs`; this library is empty.
