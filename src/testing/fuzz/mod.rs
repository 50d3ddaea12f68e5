//! The fuzz harnesses: each `run` takes the fuzzer's bytes and panics on a crash or a violated
//! property. The cargo-fuzz targets of the same name in `fuzz/fuzz_targets/` call them, and
//! `tests/fuzz_regressions.rs` replays every kept input in `tests/data/fuzz/<target>/` through
//! them under plain `cargo test`.

pub mod admission;
pub mod token;
