//! Cases the model test found, or that were found while writing it, pinned down with
//! exact times.

use super::open;
use bytes::Bytes;
use ferry_broker::groups::{GroupState, JoinRequest, JoinResult};
use std::time::{Duration, Instant};

/// Regression: when two members' sessions ran out at the tick that also ended a
/// rebalance, the rebalance dropped the second one while the first was removed, and
/// the removal of the second (gone already) started yet another rebalance: the
/// generation just handed out was void and the remaining member had to join again.
#[test]
fn members_expiring_as_a_rebalance_ends_leave_the_new_generation_standing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let coordinator = open(dir.path());
    let start = Instant::now();
    let at = |ms: u64| start + Duration::from_millis(ms);
    let request = |client_id: &str, member_id: &str| JoinRequest {
        group: "g".into(),
        member_id: member_id.into(),
        group_instance_id: None,
        client_id: client_id.into(),
        client_host: "10.0.0.1".into(),
        session_timeout_ms: 1000,
        rebalance_timeout_ms: 1000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"m"))],
        require_member_id: false,
    };
    runtime.block_on(async {
        let mut joins = Vec::new();
        for client_id in ["a", "b", "c"] {
            joins.push(coordinator.begin_join(request(client_id, ""), at(0)).await);
        }
        coordinator.tick(at(300)).await;
        let first: Vec<JoinResult> = joins
            .iter_mut()
            .map(|join| join.try_take().expect("answered").expect("joined"))
            .collect();
        assert!(first.iter().all(|joined| joined.generation == 1));
        let leader = first[0].leader.clone();
        coordinator
            .sync("g", &leader, None, 1, Vec::new(), at(300))
            .await
            .expect("stable");
        // The leader rejoins at 400 (deadline 400 + 1000); b and c, last seen at 300,
        // stay silent: their sessions and the rebalance run out at the same tick.
        let mut rejoin = coordinator.begin_join(request("a", &leader), at(400)).await;
        coordinator.tick(at(1400)).await;
        let joined = rejoin.try_take().expect("answered").expect("joined");
        assert_eq!(joined.generation, 2);
        assert_eq!(
            coordinator.describe("g").await.state,
            GroupState::CompletingRebalance
        );
        coordinator
            .sync("g", &leader, None, 2, Vec::new(), at(1400))
            .await
            .expect("the new generation stands");
    });
}
