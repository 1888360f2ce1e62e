//! Code generated from `proto/kurrent/*.proto` (Annals' own description of the KurrentDB
//! client protocol, v1). Module nesting mirrors the protobuf packages so the generated
//! `super::` paths resolve.

#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

/// `event_store.*` packages.
pub mod event_store {
    /// `event_store.client`: shared messages.
    pub mod client {
        include!(concat!(env!("OUT_DIR"), "/event_store.client.rs"));

        /// `event_store.client.streams`: the Streams service.
        pub mod streams {
            include!(concat!(env!("OUT_DIR"), "/event_store.client.streams.rs"));
        }

        /// `event_store.client.server_features`.
        pub mod server_features {
            include!(concat!(
                env!("OUT_DIR"),
                "/event_store.client.server_features.rs"
            ));
        }

        /// `event_store.client.gossip`.
        pub mod gossip {
            include!(concat!(env!("OUT_DIR"), "/event_store.client.gossip.rs"));
        }
    }
}

/// `google.rpc`: the status message BatchAppend embeds.
pub mod google {
    /// `google.rpc`.
    pub mod rpc {
        include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
    }
}
