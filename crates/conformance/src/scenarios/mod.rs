//! The scenarios, one module per topic. Each is `pub async fn name<B: Backend>(backend: &B)`
//! and panics on the first violation.

pub mod all_filters;
pub mod all_reads;
pub mod deletion;
pub mod durability;
pub mod expected_revision;
pub mod idempotency;
pub mod metadata;
pub mod multi_stream;
pub mod positions;
pub mod reads;
pub mod subscriptions;
pub mod validation;
pub mod virtual_streams;
