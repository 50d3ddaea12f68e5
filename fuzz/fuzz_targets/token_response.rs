//! Arbitrary bytes as an IDaaS token endpoint response, then the JWT checks on its token.
//! See `harness/token.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../harness/token.rs"]
mod token;

fuzz_target!(|data: &[u8]| {
    token::run(data);
});
