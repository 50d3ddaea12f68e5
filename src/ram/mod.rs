//! Alibaba Cloud RAM and STS as idaas-projector sees them, pure: the error codes of
//! AssumeRoleWithOIDC and what each means ([`code`]), the names RAM accepts ([`names`]: ARNs,
//! role session names, region IDs), and the claim checks RAM applies to an OIDC token
//! ([`claims`]), implemented once for the projector, `check` and the STS emulator.

pub mod claims;
pub mod code;
pub mod names;

pub use claims::{Check, Expectations, Outcome, check_claims, claim_checks};

/// The STS action that swaps an OIDC token for temporary credentials.
pub const STS_ACTION: &str = "AssumeRoleWithOIDC";
/// Its API version.
pub const STS_VERSION: &str = "2015-04-01";
