//! The conformance suite: scenarios every Annals backend must pass, written once against the
//! core traits. A backend implements [`Backend`], expands [`conformance_tests!`] in its
//! tests, and compares itself with the in-memory model through [`model::model_test`].
//!
//! ```ignore
//! // crates/<backend>/tests/conformance.rs
//! annals_conformance::conformance_tests!(MyBackend::default());
//!
//! #[test]
//! fn model() {
//!     let config = annals_conformance::model::ModelConfig::new(concat!(
//!         env!("CARGO_MANIFEST_DIR"),
//!         "/proptest-regressions/model.txt"
//!     ));
//!     annals_conformance::model::model_test(MyBackend::default, config);
//! }
//! ```
//!
//! Scenarios are `pub async fn name<B: Backend>(backend: &B)` in [`scenarios`], one module per
//! topic. Each creates its own store(s) through the backend and panics on the first
//! violation; the macro turns each into a `#[tokio::test]` named `<topic>::<scenario>`.
// This crate is test support: its functions are assertions that report a broken backend by
// panicking, so `unwrap`, `expect` and `panic!` are how they fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::sync::Arc;

use annals_core::{Clock, EventStore};

pub mod model;
pub mod scenarios;
pub mod support;

/// How the suite obtains stores of one backend.
pub trait Backend: Send + Sync + 'static {
    /// The store type.
    type Store: EventStore + 'static;

    /// True when the backend assigns gap-free positions (0, 1, 2, … with no holes, also
    /// across failed appends). Scenarios then assert exact positions; otherwise only that
    /// positions strictly increase in commit order. The PostgreSQL backend sets it to
    /// `false`.
    const GAP_FREE_POSITIONS: bool = true;

    /// A fresh, empty store whose commit timestamps and `max_age` checks use `clock`.
    fn create(&self, clock: Arc<dyn Clock>) -> impl Future<Output = Arc<Self::Store>> + Send;

    /// Closes the store (the caller passes the last reference) and opens it again from its
    /// storage. `None` for backends that keep nothing across a close (the in-memory store).
    fn reopen(
        &self,
        store: Arc<Self::Store>,
    ) -> impl Future<Output = Option<Arc<Self::Store>>> + Send;
}

/// Re-exports the generated tests need, so a backend crate does not have to name them.
#[doc(hidden)]
pub mod __private {
    pub use tokio;
}

/// Calls `$callback! { topic { scenario, … } … }` with every scenario of the suite: the one
/// list both the test macro and the suite's completeness check are generated from.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_scenarios {
    ($callback:path) => {
        $callback! {
            expected_revision {
                any_on_missing_stream_creates_it,
                no_stream_on_missing_stream_creates_it,
                stream_exists_on_missing_stream_conflicts,
                exact_on_missing_stream_conflicts,
                any_on_existing_stream_appends,
                no_stream_on_existing_stream_conflicts,
                stream_exists_on_existing_stream_appends,
                exact_on_existing_stream_checks_the_last_revision,
                expectations_on_soft_deleted_stream,
                expectations_on_tombstoned_stream,
                empty_appends_check_and_write_nothing,
                delete_and_tombstone_check_their_expectation,
            }
            multi_stream {
                multi_stream_append_writes_every_stream_atomically,
                one_failing_check_writes_nothing_anywhere,
                tombstoned_stream_fails_the_whole_commit,
                invalid_event_fails_the_whole_commit,
                failed_recreation_writes_no_metadata,
            }
            validation {
                reserved_and_virtual_streams_are_not_writable,
                malformed_events_are_refused,
            }
            idempotency {
                no_stream_resend_returns_the_first_result,
                exact_resend_returns_the_first_result,
                any_resend_returns_the_first_result,
                multi_stream_resend_returns_the_first_results,
                resend_with_other_ids_still_conflicts,
                resend_after_reopen_returns_the_first_result,
            }
            reads {
                forward_read_returns_every_field,
                backward_reads_and_limits,
                forward_reads_from_a_revision,
                reads_beyond_the_end_are_empty,
                missing_streams_are_not_found,
                binary_events_round_trip,
            }
            all_reads {
                all_forward_and_backward,
                all_from_positions,
                all_paging_with_next,
                all_on_empty_store,
            }
            all_filters {
                stream_prefix_filter,
                event_type_prefix_filter,
                regex_filters,
                exclude_system_events_filter,
                filtered_backward_read_with_limit,
                max_scan_bounds_the_examined_positions,
            }
            virtual_streams {
                category_stream_links_with_contiguous_revisions,
                event_type_stream_links_with_contiguous_revisions,
                virtual_streams_backward_and_paging,
                virtual_streams_of_nothing_are_not_found,
                virtual_streams_hide_deleted_and_truncated_events,
            }
            metadata {
                max_count_keeps_the_last_events,
                max_age_hides_old_events,
                truncate_before_hides_earlier_revisions,
                custom_json_round_trips,
                metadata_revision_and_expected_revision,
                metadata_before_the_stream_exists,
                metadata_restrictions_apply_to_all,
            }
            deletion {
                soft_delete_reads_not_found,
                soft_deleted_stream_is_recreated_with_continuing_revisions,
                soft_delete_keeps_other_metadata,
                tombstone_reads_stream_deleted,
                tombstone_refuses_every_write,
                tombstone_record_is_visible_in_all,
                tombstone_of_missing_stream,
            }
            subscriptions {
                stream_subscription_from_start_catches_up_then_goes_live,
                stream_subscription_from_end,
                stream_subscription_after_revision,
                subscription_to_missing_stream_waits_for_it,
                subscription_follows_soft_delete_and_recreation,
                subscription_ends_when_stream_is_tombstoned,
                category_subscription_uses_link_revisions,
                all_subscription_from_start_end_and_after,
                filtered_all_subscription_emits_checkpoints,
                concurrent_writers_stream_subscription,
                concurrent_writers_category_subscription,
                concurrent_writers_all_subscription,
            }
            positions {
                single_appends_get_increasing_positions,
                multi_stream_positions_are_contiguous,
                metadata_and_tombstones_take_positions,
                failed_appends_consume_no_positions,
                concurrent_appends_get_unique_increasing_positions,
                head_follows_commits,
            }
            durability {
                events_survive_reopen,
                metadata_and_deletes_survive_reopen,
                revisions_and_positions_continue_after_reopen,
                reopen_twice,
            }
        }
    };
}

/// Generates the test modules; called by [`conformance_tests!`] through `__with_scenarios!`.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_modules {
    ($( $topic:ident { $( $name:ident ),* $(,)? } )*) => {
        $(
            mod $topic {
                $(
                    #[::annals_conformance::__private::tokio::test(
                        flavor = "multi_thread",
                        worker_threads = 2,
                        crate = "::annals_conformance::__private::tokio"
                    )]
                    async fn $name() {
                        let backend = super::__annals_conformance_backend();
                        ::annals_conformance::scenarios::$topic::$name(&backend).await;
                    }
                )*
            }
        )*
    };
}

/// Expands to one `#[tokio::test]` per scenario (named `<topic>::<scenario>`, run on a
/// two-worker multi-threaded runtime), each with a fresh backend value from `$backend`.
///
/// Expand it once, at the root of a test target (`tests/<name>.rs`) of a crate that depends
/// on `annals-conformance` under its own name.
#[macro_export]
macro_rules! conformance_tests {
    ($backend:expr) => {
        fn __annals_conformance_backend() -> impl ::annals_conformance::Backend {
            $backend
        }
        ::annals_conformance::__with_scenarios!(::annals_conformance::__conformance_modules);
    };
}

#[cfg(test)]
mod tests {
    macro_rules! listed {
        ($( $topic:ident { $( $name:ident ),* $(,)? } )*) => {
            const LISTED: &[(&str, &str)] = &[$( $( (stringify!($topic), stringify!($name)) ),* ),*];
        };
    }

    crate::__with_scenarios!(listed);

    const SOURCES: &[(&str, &str)] = &[
        (
            "expected_revision",
            include_str!("scenarios/expected_revision.rs"),
        ),
        ("multi_stream", include_str!("scenarios/multi_stream.rs")),
        ("validation", include_str!("scenarios/validation.rs")),
        ("idempotency", include_str!("scenarios/idempotency.rs")),
        ("reads", include_str!("scenarios/reads.rs")),
        ("all_reads", include_str!("scenarios/all_reads.rs")),
        ("all_filters", include_str!("scenarios/all_filters.rs")),
        (
            "virtual_streams",
            include_str!("scenarios/virtual_streams.rs"),
        ),
        ("metadata", include_str!("scenarios/metadata.rs")),
        ("deletion", include_str!("scenarios/deletion.rs")),
        ("subscriptions", include_str!("scenarios/subscriptions.rs")),
        ("positions", include_str!("scenarios/positions.rs")),
        ("durability", include_str!("scenarios/durability.rs")),
    ];

    /// Every `pub async fn` scenario in the sources is in the macro's list and vice versa,
    /// so no scenario is written and then silently never run.
    #[test]
    fn every_scenario_is_listed() {
        let mut found = Vec::new();
        for (topic, source) in SOURCES {
            for line in source.lines() {
                if let Some(rest) = line.strip_prefix("pub async fn ") {
                    let name = rest.split(['<', '(']).next().unwrap();
                    found.push((*topic, name));
                }
            }
        }
        let mut listed = LISTED.to_vec();
        listed.sort_unstable();
        found.sort_unstable();
        assert_eq!(listed, found);
    }
}
