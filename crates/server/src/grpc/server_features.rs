//! `event_store.client.server_features.ServerFeatures`: the methods Annals serves, and the
//! version clients use to decide what to call.

use tonic::{Request, Response, Status};

use crate::proto::event_store::client::Empty;
use crate::proto::event_store::client::server_features as pb;

/// Every gRPC method Annals implements, as (lower-case service, lower-case method).
pub(crate) const METHODS: &[(&str, &str)] = &[
    ("event_store.client.streams.streams", "read"),
    ("event_store.client.streams.streams", "append"),
    ("event_store.client.streams.streams", "delete"),
    ("event_store.client.streams.streams", "tombstone"),
    ("event_store.client.streams.streams", "batchappend"),
    (
        "event_store.client.server_features.serverfeatures",
        "getsupportedmethods",
    ),
    ("event_store.client.gossip.gossip", "read"),
];

/// The ServerFeatures service.
#[derive(Debug, Clone)]
pub(crate) struct ServerFeaturesService {
    pub(crate) version: String,
}

#[tonic::async_trait]
impl pb::server_features_server::ServerFeatures for ServerFeaturesService {
    async fn get_supported_methods(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<pb::SupportedMethods>, Status> {
        let methods = METHODS
            .iter()
            .map(|(service, method)| pb::SupportedMethod {
                method_name: (*method).to_owned(),
                service_name: (*service).to_owned(),
                features: Vec::new(),
            })
            .collect();
        Ok(Response::new(pb::SupportedMethods {
            methods,
            event_store_server_version: self.version.clone(),
        }))
    }
}
