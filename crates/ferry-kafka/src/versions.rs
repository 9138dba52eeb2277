//! The API versions Ferry answers, and so advertises in ApiVersions. Clients pick the
//! highest version both sides list, so nothing is listed that Ferry does not handle.
//!
//! Produce is listed from v0 although only v3 and later are handled: older librdkafka
//! releases check for v0 before they enable compression, and Kafka 4 does the same
//! (v0-v2 requests are answered by closing the connection). Topics are addressed by id
//! in Metadata v12+ (ids answered from v10), Fetch v13+ and Produce v13, DeleteTopics
//! v6; CreateTopics v7 answers the new topic's id. Fetch stops at v16: v17 and v18 add
//! only what replicas of a multi-node cluster send. ListOffsets stops before the
//! max-timestamp query, which Ferry does not implement. The group APIs carry group
//! instance ids (static membership): JoinGroup v5+ (v9's `skip_assignment` is never
//! set: a static leader that restarts is answered as a follower, as Kafka did before
//! v9), SyncGroup and Heartbeat v3+, LeaveGroup v3+, OffsetCommit v7+, DescribeGroups
//! v4+ (librdkafka 2.x sends JoinGroup up to v5, Heartbeat and SyncGroup up to v3). The ACL APIs start at v1 (the codec's
//! lowest, with pattern types), which librdkafka and the Java client both speak.
//! AlterConfigs, IncrementalAlterConfigs and OffsetDelete are listed with every version
//! the codec has (librdkafka 2.x uses AlterConfigs up to v2, IncrementalAlterConfigs up
//! to v1 and OffsetDelete v0). The partition admin APIs (DeleteRecords, DescribeLogDirs,
//! DescribeProducers, OffsetForLeaderEpoch, ElectLeaders) and DescribeCluster are listed
//! with every version the codec has; OffsetForLeaderEpoch starts at v2, the codec's
//! lowest, which librdkafka and the Java client use. DescribeTopicPartitions has only v0.
//! ConsumerGroupHeartbeat and ConsumerGroupDescribe (KIP-848) are listed with every
//! version the codec has; v1's regular-expression subscriptions are refused with
//! INVALID_REQUEST. OffsetCommit v9 carries the member epoch of those groups.

use kafka_protocol::messages::ApiKey;

/// (api, lowest, highest) version handled.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 13),
    (ApiKey::Fetch, 4, 16),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 4),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::DescribeTopicPartitions, 0, 0),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 4),
    (ApiKey::EndTxn, 0, 4),
    (ApiKey::TxnOffsetCommit, 0, 4),
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
];

/// Versions below this are listed (for old clients' feature checks) but not handled.
pub const PRODUCE_MIN_HANDLED: i16 = 3;

pub fn supported(key: ApiKey, version: i16) -> bool {
    let min = if key == ApiKey::Produce {
        PRODUCE_MIN_HANDLED
    } else {
        i16::MIN
    };
    SUPPORTED
        .iter()
        .any(|(k, lo, hi)| *k == key && version >= (*lo).max(min) && version <= *hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::Message;

    fn decodable(key: ApiKey) -> (i16, i16) {
        let r = match key {
            ApiKey::Produce => ProduceRequest::VERSIONS,
            ApiKey::Fetch => FetchRequest::VERSIONS,
            ApiKey::ListOffsets => ListOffsetsRequest::VERSIONS,
            ApiKey::Metadata => MetadataRequest::VERSIONS,
            ApiKey::ApiVersions => ApiVersionsRequest::VERSIONS,
            ApiKey::CreateTopics => CreateTopicsRequest::VERSIONS,
            ApiKey::DeleteTopics => DeleteTopicsRequest::VERSIONS,
            ApiKey::CreatePartitions => CreatePartitionsRequest::VERSIONS,
            ApiKey::InitProducerId => {
                InitProducerIdRequest::VERSIONS.intersect(&InitProducerIdResponse::VERSIONS)
            }
            ApiKey::DescribeConfigs => DescribeConfigsRequest::VERSIONS,
            ApiKey::AlterConfigs => {
                AlterConfigsRequest::VERSIONS.intersect(&AlterConfigsResponse::VERSIONS)
            }
            ApiKey::IncrementalAlterConfigs => IncrementalAlterConfigsRequest::VERSIONS
                .intersect(&IncrementalAlterConfigsResponse::VERSIONS),
            ApiKey::OffsetDelete => {
                OffsetDeleteRequest::VERSIONS.intersect(&OffsetDeleteResponse::VERSIONS)
            }
            ApiKey::FindCoordinator => FindCoordinatorRequest::VERSIONS,
            ApiKey::JoinGroup => JoinGroupRequest::VERSIONS,
            ApiKey::SyncGroup => SyncGroupRequest::VERSIONS,
            ApiKey::Heartbeat => HeartbeatRequest::VERSIONS,
            ApiKey::LeaveGroup => LeaveGroupRequest::VERSIONS,
            ApiKey::OffsetCommit => {
                OffsetCommitRequest::VERSIONS.intersect(&OffsetCommitResponse::VERSIONS)
            }
            ApiKey::OffsetFetch => {
                OffsetFetchRequest::VERSIONS.intersect(&OffsetFetchResponse::VERSIONS)
            }
            ApiKey::ListGroups => ListGroupsRequest::VERSIONS,
            ApiKey::DescribeGroups => DescribeGroupsRequest::VERSIONS,
            ApiKey::DeleteGroups => DeleteGroupsRequest::VERSIONS,
            ApiKey::SaslHandshake => SaslHandshakeRequest::VERSIONS,
            ApiKey::SaslAuthenticate => SaslAuthenticateRequest::VERSIONS,
            ApiKey::DescribeAcls => DescribeAclsRequest::VERSIONS,
            ApiKey::CreateAcls => CreateAclsRequest::VERSIONS,
            ApiKey::DeleteAcls => DeleteAclsRequest::VERSIONS,
            ApiKey::DescribeUserScramCredentials => DescribeUserScramCredentialsRequest::VERSIONS,
            ApiKey::AlterUserScramCredentials => AlterUserScramCredentialsRequest::VERSIONS,
            ApiKey::DeleteRecords => {
                DeleteRecordsRequest::VERSIONS.intersect(&DeleteRecordsResponse::VERSIONS)
            }
            ApiKey::DescribeLogDirs => {
                DescribeLogDirsRequest::VERSIONS.intersect(&DescribeLogDirsResponse::VERSIONS)
            }
            ApiKey::DescribeProducers => {
                DescribeProducersRequest::VERSIONS.intersect(&DescribeProducersResponse::VERSIONS)
            }
            ApiKey::OffsetForLeaderEpoch => OffsetForLeaderEpochRequest::VERSIONS
                .intersect(&OffsetForLeaderEpochResponse::VERSIONS),
            ApiKey::ElectLeaders => {
                ElectLeadersRequest::VERSIONS.intersect(&ElectLeadersResponse::VERSIONS)
            }
            ApiKey::DescribeCluster => {
                DescribeClusterRequest::VERSIONS.intersect(&DescribeClusterResponse::VERSIONS)
            }
            ApiKey::DescribeTopicPartitions => DescribeTopicPartitionsRequest::VERSIONS
                .intersect(&DescribeTopicPartitionsResponse::VERSIONS),
            ApiKey::AddPartitionsToTxn => {
                AddPartitionsToTxnRequest::VERSIONS.intersect(&AddPartitionsToTxnResponse::VERSIONS)
            }
            ApiKey::AddOffsetsToTxn => {
                AddOffsetsToTxnRequest::VERSIONS.intersect(&AddOffsetsToTxnResponse::VERSIONS)
            }
            ApiKey::EndTxn => EndTxnRequest::VERSIONS.intersect(&EndTxnResponse::VERSIONS),
            ApiKey::TxnOffsetCommit => {
                TxnOffsetCommitRequest::VERSIONS.intersect(&TxnOffsetCommitResponse::VERSIONS)
            }
            ApiKey::ListTransactions => {
                ListTransactionsRequest::VERSIONS.intersect(&ListTransactionsResponse::VERSIONS)
            }
            ApiKey::DescribeTransactions => DescribeTransactionsRequest::VERSIONS
                .intersect(&DescribeTransactionsResponse::VERSIONS),
            ApiKey::ConsumerGroupHeartbeat => ConsumerGroupHeartbeatRequest::VERSIONS
                .intersect(&ConsumerGroupHeartbeatResponse::VERSIONS),
            ApiKey::ConsumerGroupDescribe => ConsumerGroupDescribeRequest::VERSIONS
                .intersect(&ConsumerGroupDescribeResponse::VERSIONS),
            _ => unreachable!(),
        };
        (r.min, r.max)
    }

    #[test]
    fn every_handled_version_is_one_the_codec_can_decode() {
        for (key, lo, hi) in SUPPORTED {
            let (min, max) = decodable(*key);
            let lo = if *key == ApiKey::Produce {
                PRODUCE_MIN_HANDLED
            } else {
                *lo
            };
            assert!(
                lo >= min && *hi <= max,
                "{key:?} {lo}..={hi} outside {min}..={max}"
            );
        }
    }
}
