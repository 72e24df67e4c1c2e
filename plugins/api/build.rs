//! Embeds the target triple this crate is compiled for, so that a plugin's declaration and the host
//! both carry it and the host can refuse a plugin built for another target.

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| String::from("unknown"));
    println!("cargo:rustc-env=CONCENTRATOR_PLUGIN_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}
