//! Node state that makes retries and balancing resilient: the node-wide retry budget. Pure
//! logic (time is passed in), shared by the workers through atomics and updated in batches
//! on the worker tick; it lives outside the route table, so a table swap never resets it.

pub mod retry_budget;

pub use retry_budget::{LocalRetryBudget, RetryBudget};
