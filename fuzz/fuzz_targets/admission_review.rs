//! Arbitrary bytes as an AdmissionReview body, and (when they are JSON) as the pod of a valid
//! Pod CREATE review, with patch application and idempotence checks. See `harness/admission.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../harness/admission.rs"]
mod admission;

fuzz_target!(|data: &[u8]| {
    admission::run(data);
});
