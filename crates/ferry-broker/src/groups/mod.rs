//! Consumer groups: members join, one of them (the leader) assigns partitions, everyone
//! heartbeats, and the group rebalances when a member joins, leaves or goes silent.
//! Committed offsets are durable. This is the classic Kafka group protocol expressed in
//! Ferry's own types; member metadata and assignments are opaque bytes chosen by the
//! clients, so the same coordinator can serve other front ends.
//!
//! - `types`: requests, answers, errors, limits;
//! - `group`: one group's state machine (time is an input; no clock, no waiting, no disk);
//! - `coordinator`: request checks, the table of groups, waiting answers, committed
//!   offsets;
//! - `consumer`: one group of the next-generation protocol (KIP-848), where Ferry
//!   assigns the partitions (`consumer_tests`: its tests);
//! - `store`: the committed offsets on disk;
//! - `static_members_tests`: static membership through the coordinator (tests).

pub mod consumer;
#[cfg(test)]
mod consumer_tests;
pub mod coordinator;
mod group;
#[cfg(test)]
mod static_members_tests;
pub mod store;
pub mod types;

pub use coordinator::Coordinator;
pub use store::{CommittedOffset, FileOffsetStore, OffsetStore, PartitionOffset};
pub use types::lag;
pub use types::{
    FetchedOffset, GroupDescription, GroupError, GroupListing, GroupResult, GroupState, JoinMember,
    JoinRequest, JoinResult, LeavingMember, MemberDescription, OffsetDeletion, Pending,
    SubscribedTopics,
};
