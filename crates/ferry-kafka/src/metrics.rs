//! What the Kafka listener measures for `/metrics`: requests and their latency per API,
//! the error codes answered per API, and connections.

use kafka_protocol::messages::{ApiKey, ResponseKind};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub api: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub api: &'static str,
    /// Kafka's error code, as a number (`3` is UNKNOWN_TOPIC_OR_PARTITION).
    pub code: i16,
}

/// The Kafka listener's metrics. Cloning shares them.
#[derive(Debug, Clone)]
pub struct KafkaMetrics {
    requests: Family<ApiLabels, Histogram, fn() -> Histogram>,
    errors: Family<ErrorLabels, Counter>,
    pub connections: Gauge,
    pub connections_accepted: Counter,
}

impl Default for KafkaMetrics {
    fn default() -> Self {
        KafkaMetrics {
            requests: Family::new_with_constructor(ferry_log::metrics::request_histogram),
            errors: Family::default(),
            connections: Gauge::default(),
            connections_accepted: Counter::default(),
        }
    }
}

/// The name of an API key, as Kafka's documentation spells it (`Produce`, `Fetch`).
pub fn api_name(key: ApiKey) -> &'static str {
    macro_rules! names {
        ($($k:ident),* $(,)?) => {
            match key {
                $(ApiKey::$k => stringify!($k),)*
                _ => "Other",
            }
        };
    }
    names!(
        Produce,
        Fetch,
        ListOffsets,
        Metadata,
        OffsetCommit,
        OffsetFetch,
        FindCoordinator,
        JoinGroup,
        Heartbeat,
        LeaveGroup,
        SyncGroup,
        DescribeGroups,
        ListGroups,
        ApiVersions,
        CreateTopics,
        DeleteTopics,
        InitProducerId,
        DescribeConfigs,
        CreatePartitions,
        DeleteGroups,
        SaslHandshake,
        SaslAuthenticate,
        CreateAcls,
        DescribeAcls,
        DeleteAcls,
        DescribeUserScramCredentials,
        AlterUserScramCredentials,
        AlterConfigs,
        IncrementalAlterConfigs,
        OffsetDelete,
        DeleteRecords,
        DescribeLogDirs,
        DescribeProducers,
        OffsetForLeaderEpoch,
        ElectLeaders,
        DescribeCluster,
        AddPartitionsToTxn,
        AddOffsetsToTxn,
        EndTxn,
        TxnOffsetCommit,
        ListTransactions,
        DescribeTransactions,
    )
}

impl KafkaMetrics {
    /// Adds the metrics to `registry` (names get the registry's prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kafka_request_duration_seconds",
            "Kafka requests by API: seconds from reading the request to its answer being ready",
            self.requests.clone(),
        );
        registry.register(
            "kafka_request_errors",
            "Error codes in Kafka answers, by API and code (one per partition or resource that failed)",
            self.errors.clone(),
        );
        registry.register(
            "kafka_connections",
            "Kafka connections open now",
            self.connections.clone(),
        );
        registry.register(
            "kafka_connections_accepted",
            "Kafka connections accepted",
            self.connections_accepted.clone(),
        );
    }

    /// Counts one answered request of API `key` that took `seconds`.
    pub fn answered(&self, key: ApiKey, seconds: f64, answer: Option<&ResponseKind>) {
        let api = api_name(key);
        self.requests
            .get_or_create(&ApiLabels { api })
            .observe(seconds);
        if let Some(answer) = answer {
            error_codes(answer, &mut |code| {
                if code != 0 {
                    self.errors.get_or_create(&ErrorLabels { api, code }).inc();
                }
            });
        }
    }
}

/// Every partition's error code of a response's topics (`$topics`, each with its
/// partitions in `$parts`).
macro_rules! per_partition {
    ($out:expr, $topics:expr, $parts:ident) => {
        for_each(
            $out,
            $topics
                .iter()
                .flat_map(|t| t.$parts.iter().map(|p| p.error_code)),
        )
    };
}

/// The error codes in an answer: its own and those of each topic, partition, group or
/// resource it answers for.
pub fn error_codes(answer: &ResponseKind, out: &mut impl FnMut(i16)) {
    use ResponseKind as R;
    match answer {
        R::Produce(r) => per_partition!(out, r.responses, partition_responses),
        R::Fetch(r) => {
            out(r.error_code);
            per_partition!(out, r.responses, partitions);
        }
        R::Metadata(r) => {
            out(r.error_code);
            for_each(out, r.topics.iter().map(|t| t.error_code));
        }
        R::ListOffsets(r) => per_partition!(out, r.topics, partitions),
        R::OffsetCommit(r) => per_partition!(out, r.topics, partitions),
        R::OffsetFetch(r) => {
            out(r.error_code);
            per_partition!(out, r.topics, partitions);
            for g in &r.groups {
                out(g.error_code);
                per_partition!(out, g.topics, partitions);
            }
        }
        R::FindCoordinator(r) => {
            out(r.error_code);
            for_each(out, r.coordinators.iter().map(|c| c.error_code));
        }
        R::JoinGroup(r) => out(r.error_code),
        R::SyncGroup(r) => out(r.error_code),
        R::Heartbeat(r) => out(r.error_code),
        R::LeaveGroup(r) => out(r.error_code),
        R::ListGroups(r) => out(r.error_code),
        R::DescribeGroups(r) => for_each(out, r.groups.iter().map(|g| g.error_code)),
        R::DeleteGroups(r) => for_each(out, r.results.iter().map(|g| g.error_code)),
        R::ApiVersions(r) => out(r.error_code),
        R::CreateTopics(r) => for_each(out, r.topics.iter().map(|t| t.error_code)),
        R::DeleteTopics(r) => for_each(out, r.responses.iter().map(|t| t.error_code)),
        R::CreatePartitions(r) => for_each(out, r.results.iter().map(|t| t.error_code)),
        R::InitProducerId(r) => out(r.error_code),
        R::DescribeConfigs(r) => for_each(out, r.results.iter().map(|t| t.error_code)),
        R::SaslHandshake(r) => out(r.error_code),
        R::SaslAuthenticate(r) => out(r.error_code),
        R::CreateAcls(r) => for_each(out, r.results.iter().map(|a| a.error_code)),
        R::DescribeAcls(r) => out(r.error_code),
        R::DeleteAcls(r) => for_each(out, r.filter_results.iter().map(|f| f.error_code)),
        R::DescribeUserScramCredentials(r) => {
            out(r.error_code);
            for_each(out, r.results.iter().map(|u| u.error_code));
        }
        R::AlterUserScramCredentials(r) => for_each(out, r.results.iter().map(|u| u.error_code)),
        R::AlterConfigs(r) => for_each(out, r.responses.iter().map(|c| c.error_code)),
        R::IncrementalAlterConfigs(r) => for_each(out, r.responses.iter().map(|c| c.error_code)),
        R::OffsetDelete(r) => {
            out(r.error_code);
            per_partition!(out, r.topics, partitions);
        }
        R::DeleteRecords(r) => per_partition!(out, r.topics, partitions),
        R::DescribeLogDirs(r) => {
            out(r.error_code);
            for_each(out, r.results.iter().map(|d| d.error_code));
        }
        R::DescribeProducers(r) => per_partition!(out, r.topics, partitions),
        R::OffsetForLeaderEpoch(r) => per_partition!(out, r.topics, partitions),
        R::ElectLeaders(r) => {
            out(r.error_code);
            per_partition!(out, r.replica_election_results, partition_result);
        }
        R::DescribeCluster(r) => out(r.error_code),
        R::AddPartitionsToTxn(r) => {
            out(r.error_code);
            for t in &r.results_by_topic_v3_and_below {
                for_each(
                    out,
                    t.results_by_partition
                        .iter()
                        .map(|p| p.partition_error_code),
                );
            }
        }
        R::AddOffsetsToTxn(r) => out(r.error_code),
        R::EndTxn(r) => out(r.error_code),
        R::TxnOffsetCommit(r) => per_partition!(out, r.topics, partitions),
        R::ListTransactions(r) => out(r.error_code),
        R::DescribeTransactions(r) => {
            for_each(out, r.transaction_states.iter().map(|t| t.error_code))
        }
        _ => {}
    }
}

fn for_each(out: &mut impl FnMut(i16), codes: impl Iterator<Item = i16>) {
    for c in codes {
        out(c);
    }
}
