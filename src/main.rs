//! The `sashad` binary (placeholder).
fn main() {}
