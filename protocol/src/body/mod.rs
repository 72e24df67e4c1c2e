//! Message bodies, one struct per kind. Each is a CBOR map with small integer keys (arrays for a few
//! small fixed records); field numbers are never reused, new optional fields get new numbers, and a
//! receiver skips keys it does not know.

pub mod down;
pub mod up;

pub use down::*;
pub use up::*;
