//! IDaaS emulator.
