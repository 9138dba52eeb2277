//! DescribeCluster, and the authorized-operations bitfields that it and Metadata answer
//! when asked: bit `n` set when the session may do the operation whose Kafka code is `n`.

use super::{Ctx, Session};
use crate::errors;
use ferry_auth::{Operation, ResourceType};
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

/// The bitfield's value when the client did not ask for it (Kafka's INT32_MIN).
pub const NOT_REQUESTED: i32 = i32::MIN;

/// The operations a topic has, as Kafka lists them.
const TOPIC_OPERATIONS: [Operation; 8] = [
    Operation::Read,
    Operation::Write,
    Operation::Create,
    Operation::Delete,
    Operation::Alter,
    Operation::Describe,
    Operation::DescribeConfigs,
    Operation::AlterConfigs,
];

/// The operations the cluster has (Kafka's ClusterAction has no use in Ferry, so no
/// one is ever granted it).
const CLUSTER_OPERATIONS: [Operation; 6] = [
    Operation::Create,
    Operation::Alter,
    Operation::Describe,
    Operation::DescribeConfigs,
    Operation::AlterConfigs,
    Operation::IdempotentWrite,
];

/// The bitfield of `ops` for which `allowed` holds.
fn bitfield(ops: &[Operation], allowed: impl Fn(Operation) -> bool) -> i32 {
    ops.iter()
        .filter(|op| allowed(**op))
        .fold(0, |bits, op| bits | 1 << op.kafka_code())
}

/// What the session may do on topic `name`.
pub fn topic_operations(ctx: &Ctx, session: &Session, name: &str) -> i32 {
    bitfield(&TOPIC_OPERATIONS, |op| {
        session.may(&ctx.auth, op, ResourceType::Topic, name)
    })
}

/// What the session may do on the cluster.
pub fn cluster_operations(ctx: &Ctx, session: &Session) -> i32 {
    bitfield(&CLUSTER_OPERATIONS, |op| {
        session.may_on_cluster(&ctx.auth, op)
    })
}

/// Brokers only: a broker answers UNSUPPORTED_ENDPOINT_TYPE for controllers (2).
const ENDPOINT_BROKERS: i8 = 1;

pub fn describe_cluster(
    ctx: &Ctx,
    req: DescribeClusterRequest,
    session: &Session,
) -> DescribeClusterResponse {
    if req.endpoint_type != ENDPOINT_BROKERS {
        return DescribeClusterResponse::default()
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(StrBytes::from_static_str(
                "Ferry lists brokers only (endpoint type 1)",
            )))
            .with_endpoint_type(req.endpoint_type);
    }
    let node = BrokerId(ctx.config.node_id);
    let broker = DescribeClusterBroker::default()
        .with_broker_id(node)
        .with_host(StrBytes::from_string(ctx.config.advertised_host.clone()))
        .with_port(i32::from(ctx.config.advertised_port));
    let ops = if req.include_cluster_authorized_operations {
        cluster_operations(ctx, session)
    } else {
        NOT_REQUESTED
    };
    DescribeClusterResponse::default()
        .with_error_code(errors::NONE)
        .with_cluster_id(StrBytes::from_static_str(super::metadata::CLUSTER_ID))
        .with_controller_id(node)
        .with_brokers(vec![broker])
        .with_cluster_authorized_operations(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_allowed_operation_sets_the_bit_of_its_kafka_code() {
        assert_eq!(bitfield(&TOPIC_OPERATIONS, |_| false), 0);
        let read_and_describe = bitfield(&TOPIC_OPERATIONS, |op| {
            matches!(op, Operation::Read | Operation::Describe)
        });
        assert_eq!(read_and_describe, (1 << 3) | (1 << 8));
        // Everything a topic has: READ..=DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS.
        assert_eq!(bitfield(&TOPIC_OPERATIONS, |_| true), 0b1101_1111_1000);
        assert_eq!(
            bitfield(&CLUSTER_OPERATIONS, |_| true),
            (1 << 5) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11) | (1 << 12)
        );
    }
}
