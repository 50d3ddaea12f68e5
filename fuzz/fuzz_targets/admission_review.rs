//! Arbitrary bytes as an AdmissionReview body, and (when they are JSON) as the pod of a valid
//! Pod CREATE review, with patch application and idempotence checks. See
//! `idaas_projector::testing::fuzz::admission` (`src/testing/fuzz/admission.rs`).

#![no_main]

use idaas_projector::testing::fuzz::admission;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    admission::run(data);
});
