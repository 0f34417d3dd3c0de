//! Cross-crate scenarios and repository-wide checks, in one test binary so that the 2-core CI
//! machine links it once.

mod tidy;
