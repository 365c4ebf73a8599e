//! Scanner throughput bench (being written).
fn main() {}
