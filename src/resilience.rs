//! Node state that makes retries and balancing resilient: the retry budget, outlier ejection,
//! circuit breakers, and the per-worker latency estimates of the balancer. Pure logic (time is
//! passed in), shared by the workers through atomics and updated in batches on the worker
//! tick. It lives outside the route table (a table only points at it), so a table swap never
//! resets it.

pub mod balancer;
pub mod breaker;
pub mod effects;
pub mod ejection;
pub mod registry;
pub mod retry_budget;

pub use effects::Effects;
pub use registry::Registry;
pub use retry_budget::{LocalRetryBudget, RetryBudget};
