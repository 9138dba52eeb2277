//! Consumer groups: members join, one of them (the leader) assigns partitions, everyone
//! heartbeats, and the group rebalances when a member joins, leaves or goes silent.
//! Committed offsets are durable. This is the classic Kafka group protocol expressed in
//! Ferry's own types; member metadata and assignments are opaque bytes chosen by the
//! clients, so the same coordinator can serve other front ends.
//!
//! `coordinator` holds the state machine, `store` the committed offsets on disk.

pub mod coordinator;
pub mod store;

pub use coordinator::{
    Coordinator, GroupDescription, GroupError, GroupState, JoinRequest, JoinResult,
    MemberDescription,
};
pub use store::{CommittedOffset, FileOffsetStore, OffsetStore};
