//! Topic ids: given at creation, kept across restarts and changes of settings, new
//! for a topic deleted and created again under the same name, and given (and stored)
//! on first open to topics created before ids existed.

mod common;
use common::broker;
use ferry_broker::{TopicId, TopicSettings};

fn partitions(n: u32) -> TopicSettings {
    TopicSettings {
        partitions: Some(n),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_topic_keeps_its_id_across_restarts_and_changes() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let b = broker(dir.path());
        let id = b
            .create_topic("t", partitions(1))
            .await
            .unwrap()
            .config
            .topic_id;
        assert!(!id.is_reserved());
        b.update_topic("t", partitions(3)).await.unwrap();
        assert_eq!(b.describe_topic("t").unwrap().config.topic_id, id);
        id
    };
    let b = broker(dir.path());
    assert_eq!(b.describe_topic("t").unwrap().config.topic_id, id);
    assert_eq!(b.topic_by_id(id).unwrap().config().name, "t");
}

#[tokio::test]
async fn a_topic_created_again_under_its_name_has_a_new_id() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    let old = b
        .create_topic("t", partitions(10))
        .await
        .unwrap()
        .config
        .topic_id;
    let other = b
        .create_topic("u", partitions(1))
        .await
        .unwrap()
        .config
        .topic_id;
    assert_ne!(old, other);
    b.delete_topic("t").await.unwrap();
    assert!(b.topic_by_id(old).is_none());
    let new = b
        .create_topic("t", partitions(3))
        .await
        .unwrap()
        .config
        .topic_id;
    assert_ne!(old, new);
    assert!(b.topic_by_id(old).is_none());
    assert_eq!(b.topic_by_id(new).unwrap().config().partitions, 3);
    assert!(b.topic_by_id(TopicId::NONE).is_none());
}

#[tokio::test]
async fn topics_stored_without_an_id_get_one_that_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let b = broker(dir.path());
        b.create_topic("t", partitions(1)).await.unwrap();
    }
    // Take the id out, as files written before ids existed have none.
    let path = dir.path().join("meta/topics.json");
    let mut file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    file["topics"][0]
        .as_object_mut()
        .unwrap()
        .remove("topic_id");
    std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();

    let id = broker(dir.path())
        .describe_topic("t")
        .unwrap()
        .config
        .topic_id;
    assert!(!id.is_reserved());
    let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(stored["topics"][0]["topic_id"], id.to_string());
    assert_eq!(
        broker(dir.path())
            .describe_topic("t")
            .unwrap()
            .config
            .topic_id,
        id
    );
}
