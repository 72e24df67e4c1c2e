//! `concentratord`: the concentrator daemon.

fn main() {}
