//! `event_store.client.gossip.Gossip`: a single-node cluster whose only member is this server,
//! alive and leader, so clients configured for discovery find it.

use std::net::SocketAddr;

use annals_core::Timestamp;
use tonic::{Request, Response, Status};

use super::{ticks, uuid_to};
use crate::proto::event_store::client::Empty;
use crate::proto::event_store::client::gossip as pb;

/// The Gossip service.
#[derive(Debug, Clone)]
pub(crate) struct GossipService {
    pub(crate) instance_id: uuid::Uuid,
    /// The address clients should use (the bound address).
    pub(crate) advertised: SocketAddr,
}

#[tonic::async_trait]
impl pb::gossip_server::Gossip for GossipService {
    async fn read(&self, _request: Request<Empty>) -> Result<Response<pb::ClusterInfo>, Status> {
        let member = pb::MemberInfo {
            instance_id: Some(uuid_to(self.instance_id, true)),
            time_stamp: i64::try_from(ticks(Timestamp::now())).unwrap_or(i64::MAX),
            state: pb::member_info::VNodeState::Leader as i32,
            is_alive: true,
            http_end_point: Some(pb::EndPoint {
                address: self.advertised.ip().to_string(),
                port: u32::from(self.advertised.port()),
            }),
        };
        Ok(Response::new(pb::ClusterInfo {
            members: vec![member],
        }))
    }
}
