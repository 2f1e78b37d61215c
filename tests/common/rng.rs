//! The seeded generator of the test kit (`quantlab::testkit::Rng`): one RNG for every test.

#![allow(dead_code)]

pub use quantlab::testkit::Rng;
