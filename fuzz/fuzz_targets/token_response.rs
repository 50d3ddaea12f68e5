//! Arbitrary bytes as an IDaaS token endpoint response, then the JWT checks on its token.
//! See `idaas_projector::testing::fuzz::token` (`src/testing/fuzz/token.rs`).

#![no_main]

use idaas_projector::testing::fuzz::token;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    token::run(data);
});
