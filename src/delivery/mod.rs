//! The delivery engine: for every queue with a `delivery` setting, workers lease
//! its messages and call the upstream, retrying with backoff behind a circuit
//! breaker per upstream host (seeds 001 and 003).

pub mod signing;
