//! Replacing a topic's settings (what Kafka's AlterConfigs asks): omitted settings
//! return to the server's defaults, the same checks as any change apply, a dry run
//! changes nothing, and a change survives a restart.

mod common;
use common::broker;
use ferry_broker::{BrokerError, TopicDefaults, TopicSettings};

fn settings() -> TopicSettings {
    TopicSettings::default()
}

#[tokio::test]
async fn replaced_settings_take_defaults_for_what_is_left_out_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    let d = TopicDefaults::default();
    {
        let b = broker(dir.path());
        b.create_topic(
            "t",
            TopicSettings {
                partitions: Some(2),
                retention_ms: Some(60_000),
                max_record_bytes: Some(4096),
                ..settings()
            },
        )
        .await
        .unwrap();
        let c = b
            .replace_topic_settings(
                "t",
                TopicSettings {
                    retention_bytes: Some(1 << 20),
                    ..settings()
                },
                false,
            )
            .await
            .unwrap();
        assert_eq!(c.partitions, 2, "the partition count is kept");
        assert_eq!(c.retention_bytes, Some(1 << 20));
        assert_eq!(c.retention_ms, d.retention_ms, "back to the default");
        assert_eq!(
            c.max_record_bytes, d.max_record_bytes,
            "back to the default"
        );
    }
    let b = broker(dir.path());
    let c = b.describe_topic("t").unwrap().config;
    assert_eq!(c.retention_bytes, Some(1 << 20));
    assert_eq!(c.max_record_bytes, d.max_record_bytes);
}

#[tokio::test]
async fn a_dry_run_checks_like_a_change_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    b.create_topic("t", settings()).await.unwrap();
    let before = b.describe_topic("t").unwrap().config;
    let would = b
        .replace_topic_settings(
            "t",
            TopicSettings {
                max_record_bytes: Some(2048),
                ..settings()
            },
            true,
        )
        .await
        .unwrap();
    assert_eq!(would.max_record_bytes, 2048);
    assert_eq!(b.describe_topic("t").unwrap().config, before);
    for bad in [
        TopicSettings {
            max_record_bytes: Some(10),
            ..settings()
        },
        TopicSettings {
            retention_ms: Some(0),
            ..settings()
        },
        TopicSettings {
            partitions: Some(3),
            ..settings()
        },
    ] {
        for dry_run in [true, false] {
            let e = b.replace_topic_settings("t", bad.clone(), dry_run).await;
            assert!(matches!(e, Err(BrokerError::InvalidConfig(_))), "{e:?}");
        }
    }
    assert_eq!(b.describe_topic("t").unwrap().config, before);
    assert!(matches!(
        b.replace_topic_settings("nope", settings(), false).await,
        Err(BrokerError::TopicNotFound(_))
    ));
}
