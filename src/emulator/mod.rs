//! In-process emulators for local use (`dev`) and tests.

pub mod idaas;
pub mod sts;
