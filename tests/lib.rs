//! Home of the `it` integration-test binary (see `it/main.rs`); the library itself is empty
//! so that cross-crate scenarios share one binary and one link step.
