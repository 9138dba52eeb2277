//! Topic ids on the wire: Ferry's [`TopicId`] as the UUIDs Kafka messages carry, and
//! the lookup of a topic named by id.

use super::Ctx;
use ferry_broker::TopicId;
use uuid::Uuid;

pub fn to_wire(id: TopicId) -> Uuid {
    Uuid::from_bytes(*id.as_bytes())
}

pub fn from_wire(id: Uuid) -> TopicId {
    TopicId::from_bytes(id.into_bytes())
}

/// The name of the topic with this id, or `None` (UNKNOWN_TOPIC_ID) when no topic has
/// it: the zero id, an id never given, or that of a topic since deleted.
pub fn name_of(ctx: &Ctx, id: Uuid) -> Option<String> {
    let id = from_wire(id);
    if id.is_none() {
        return None;
    }
    ctx.broker.topic_by_id(id).map(|t| t.config().name)
}
