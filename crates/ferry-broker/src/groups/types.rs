//! What the coordinator is asked and what it answers: requests, results, errors, the
//! group states, the limits on client-chosen values, and [`Pending`], an answer that may
//! have to wait for other members.

use super::store::CommittedOffset;
use bytes::Bytes;
use tokio::sync::oneshot;

/// How long a group that was empty waits for more members before its first rebalance.
pub const INITIAL_REBALANCE_DELAY_MS: u64 = 300;
/// Limits on client-chosen timeouts, named with their unit last.
pub const SESSION_TIMEOUT_MS_MIN: i32 = 1_000;
pub const SESSION_TIMEOUT_MS_MAX: i32 = 300_000;
/// Members of one group, and groups, at most.
pub const MEMBERS_PER_GROUP_MAX: usize = 1_000;
pub const GROUPS_MAX: usize = 10_000;
/// Largest metadata string stored with a committed offset (as Kafka's default).
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;
/// Largest member id, group instance id, client id and protocol metadata a member may
/// send.
pub const MEMBER_ID_BYTES_MAX: usize = 512;
pub const PROTOCOL_METADATA_BYTES_MAX: usize = 64 * 1024;
/// Longest group id.
pub const GROUP_ID_BYTES_MAX: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupError {
    UnknownMember,
    IllegalGeneration,
    RebalanceInProgress,
    /// The member must join again with this id (Kafka's MEMBER_ID_REQUIRED).
    MemberIdRequired(String),
    /// Another member now holds the group instance id this member claims (a newer
    /// process of the same static member took over): Kafka's FENCED_INSTANCE_ID.
    FencedInstanceId,
    InconsistentProtocol,
    InvalidSessionTimeout,
    GroupNotFound,
    NonEmptyGroup,
    InvalidGroupId,
    /// The group has `MEMBERS_PER_GROUP_MAX` members.
    GroupFull,
    /// `GROUPS_MAX` groups are held (with members or committed offsets); try again
    /// later, or delete groups no longer used.
    TooManyGroups,
    /// Offset metadata over `OFFSET_METADATA_BYTES_MAX`.
    MetadataTooLarge,
    Storage(String),
    /// A consumer-protocol (KIP-848) heartbeat with a member epoch the member does
    /// not have: Kafka's FENCED_MEMBER_EPOCH; the member joins again.
    FencedMemberEpoch,
    /// An offset commit with a member epoch other than the member's
    /// (STALE_MEMBER_EPOCH).
    StaleMemberEpoch,
    /// A static member joining while another live member holds its instance id
    /// (UNRELEASED_INSTANCE_ID).
    UnreleasedInstanceId,
    /// In shared mode, another node coordinates the group (NOT_COORDINATOR): the client
    /// asks FindCoordinator again.
    NotCoordinator,
    /// A server assignor Ferry does not have (UNSUPPORTED_ASSIGNOR).
    UnsupportedAssignor,
    /// A request breaking the protocol's rules (INVALID_REQUEST), with why.
    InvalidRequest(String),
}

/// The answer to one group request.
pub type GroupResult<T> = std::result::Result<T, GroupError>;

/// Records a group has still to read in a partition that ends at `end`, having committed
/// `committed`: `None` for a negative commit (Kafka's "no offset"), 0 for a commit at or
/// past the end.
pub fn lag(end: u64, committed: i64) -> Option<u64> {
    u64::try_from(committed).ok().map(|c| end.saturating_sub(c))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group: String,
    /// Empty for a member joining for the first time.
    pub member_id: String,
    /// Set for a static member (KIP-345): a process that restarts with the same
    /// instance id takes over the member it was, with its assignment, without a
    /// rebalance of the others.
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (protocol name, member metadata), in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// A new member must first ask for an id (JoinGroup v4 and later).
    pub require_member_id: bool,
}

/// A member named in a LeaveGroup: by member id, by group instance id (a static
/// member), or by both, which must then agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeavingMember {
    /// Empty when the member is named by its instance id alone.
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// One member as the leader sees it in its JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// The member's metadata for the chosen protocol.
    pub metadata: Bytes,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinResult {
    pub generation: i32,
    pub protocol_type: String,
    pub protocol_name: String,
    pub leader: String,
    pub member_id: String,
    /// For the leader only: every member with its metadata for the chosen protocol.
    pub members: Vec<JoinMember>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group: String,
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol_name: String,
    /// The generation and its leader (0 and empty for a group Ferry does not hold).
    pub generation: i32,
    pub leader: String,
    pub members: Vec<MemberDescription>,
}

/// A partition's committed offset as OffsetFetch answers it (`None`: nothing committed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedOffset {
    pub topic: String,
    pub partition: u32,
    pub committed: Option<CommittedOffset>,
}

/// What became of one partition asked for in an offset deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetDeletion {
    /// Its committed offset is gone (or there was none).
    Deleted,
    /// Kept: a member of the group reads the topic (Kafka's GROUP_SUBSCRIBED_TO_TOPIC).
    Subscribed,
}

/// The topics a group's members read, as a front end tells from what they sent when
/// they joined (protocol type, every member's metadata); `None` when it cannot tell.
pub type SubscribedTopics<'a> =
    &'a (dyn Fn(&str, &[Bytes]) -> Option<std::collections::HashSet<String>> + Sync);

/// A group as ListGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group: String,
    pub protocol_type: String,
    pub state: GroupState,
}

/// An answer that may have to wait for other members (JoinGroup waits for the
/// rebalance, SyncGroup for the leader's assignments). [`Pending::wait`] awaits it;
/// [`Pending::try_take`] looks without waiting, so a test can drive the coordinator
/// step by step.
#[derive(Debug)]
#[must_use = "a Pending holds the answer; wait for it or take it"]
pub struct Pending<T> {
    answer: Answer<T>,
}

#[derive(Debug)]
enum Answer<T> {
    /// Answered at once (`None` once taken).
    Ready(Option<GroupResult<T>>),
    /// Answered when the group gets there.
    Waiting(oneshot::Receiver<GroupResult<T>>),
}

impl<T> Pending<T> {
    pub(super) fn ready(result: GroupResult<T>) -> Self {
        Pending {
            answer: Answer::Ready(Some(result)),
        }
    }

    pub(super) fn waiting(receiver: oneshot::Receiver<GroupResult<T>>) -> Self {
        Pending {
            answer: Answer::Waiting(receiver),
        }
    }

    /// The answer. A wait the coordinator gave up on (the member was replaced by a
    /// newer request of its own) answers RebalanceInProgress.
    pub async fn wait(self) -> GroupResult<T> {
        match self.answer {
            Answer::Ready(Some(result)) => result,
            Answer::Ready(None) => Err(GroupError::RebalanceInProgress),
            Answer::Waiting(receiver) => receiver
                .await
                .unwrap_or(Err(GroupError::RebalanceInProgress)),
        }
    }

    /// The answer if it is there, else `None`. It is given once: later calls give `None`.
    pub fn try_take(&mut self) -> Option<GroupResult<T>> {
        let result = match &mut self.answer {
            Answer::Ready(result) => return result.take(),
            Answer::Waiting(receiver) => match receiver.try_recv() {
                Ok(result) => result,
                Err(oneshot::error::TryRecvError::Empty) => return None,
                Err(oneshot::error::TryRecvError::Closed) => Err(GroupError::RebalanceInProgress),
            },
        };
        self.answer = Answer::Ready(None);
        Some(result)
    }
}
