//! `concentrator crypto`: auth-vector and cipher tools over the security crate.
