//! The conformance suite: scenarios every Annals backend must pass, written once against the
//! core traits. A backend implements [`Backend`] and expands [`conformance_tests!`] in its
//! tests.

use std::future::Future;
use std::sync::Arc;

use annals_core::{Clock, EventStore};

/// How the suite obtains stores of one backend.
pub trait Backend: Send + Sync + 'static {
    /// The store type.
    type Store: EventStore + 'static;

    /// A fresh, empty store whose commit timestamps and `max_age` checks use `clock`.
    fn create(&self, clock: Arc<dyn Clock>) -> impl Future<Output = Arc<Self::Store>> + Send;

    /// Closes the store (the caller passes the last reference) and opens it again from its
    /// storage. `None` for backends that keep nothing across a close (the in-memory store).
    fn reopen(
        &self,
        store: Arc<Self::Store>,
    ) -> impl Future<Output = Option<Arc<Self::Store>>> + Send;
}
