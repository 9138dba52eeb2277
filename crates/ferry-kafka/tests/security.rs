//! SASL and the security admin APIs on the Kafka listener, byte by byte over a real
//! socket: both handshake versions (v0 carries raw SASL messages without Kafka headers,
//! which no Python client sends), every mechanism, the refusals that close the
//! connection, the per-item errors of the ACL and SCRAM credential APIs, and the ACL
//! checks of the config and offset-deletion APIs.

use bytes::{BufMut, Bytes, BytesMut};
use ferry_auth::scram::{salted_password, ClientExchange, Mechanism};
use ferry_auth::{Auth, AuthSettings};
use ferry_broker::{Broker, BrokerConfig, TopicDefaults};
use ferry_kafka::KafkaConfig;
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PASSWORD: &str = "alice-secret";

struct Server {
    addr: String,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::watch::Sender<bool>,
}

/// A listener that requires authentication, with user `alice`.
async fn server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        defaults: TopicDefaults::default(),
        retention_check_ms: 60_000,
        max_partitions: ferry_broker::broker::MAX_PARTITIONS_DEFAULT,
        max_open_segments: None,
        cleaner_offset_map_bytes: 1 << 20,
    })
    .unwrap();
    let auth = Auth::in_memory(AuthSettings {
        required: true,
        super_users: vec!["User:alice".into()],
        no_acl_allows: false,
    });
    auth.create_user("alice", PASSWORD).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = KafkaConfig {
        addr,
        advertised_host: "127.0.0.1".into(),
        advertised_port: addr.port(),
        node_id: 1,
        max_frame_bytes: 1 << 20,
        max_connections: 16,
        fetch_bytes_max: 1 << 20,
        auto_create_topics: false,
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(ferry_kafka::serve(
        listener,
        broker,
        config,
        Default::default(),
        auth,
        None,
        stopped,
    ));
    Server {
        addr: addr.to_string(),
        _dir: dir,
        _stop: stop,
    }
}

struct Conn {
    s: TcpStream,
    next: i32,
}

impl Conn {
    async fn open(server: &Server) -> Conn {
        Conn {
            s: TcpStream::connect(&server.addr).await.unwrap(),
            next: 1,
        }
    }

    async fn send_frame(&mut self, payload: &[u8]) {
        let mut out = BytesMut::new();
        out.put_i32(payload.len() as i32);
        out.put_slice(payload);
        self.s.write_all(&out).await.unwrap();
    }

    /// The next frame's payload, or `None` when the server closed the connection.
    async fn read_frame(&mut self) -> Option<Bytes> {
        let read = async {
            let len = self.s.read_i32().await.ok()?;
            let mut buf = vec![0u8; len as usize];
            self.s.read_exact(&mut buf).await.ok()?;
            Some(Bytes::from(buf))
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("an answer or a closed connection within 10 s")
    }

    /// Sends a request; its answer's body, or `None` when the server closed.
    async fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        body: &Req,
    ) -> Option<Resp> {
        let id = self.next;
        self.next += 1;
        let mut out = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(id)
            .with_client_id(Some(StrBytes::from_static_str("sasl-test")))
            .encode(&mut out, key.request_header_version(version))
            .unwrap();
        body.encode(&mut out, version).unwrap();
        self.send_frame(&out).await;
        let mut answer = self.read_frame().await?;
        let header_version = if key == ApiKey::ApiVersions {
            0
        } else {
            key.response_header_version(version)
        };
        let header = ResponseHeader::decode(&mut answer, header_version).unwrap();
        assert_eq!(header.correlation_id, id);
        Some(Resp::decode(&mut answer, version).unwrap())
    }

    async fn handshake(&mut self, version: i16, mechanism: &'static str) -> SaslHandshakeResponse {
        let req =
            SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism));
        self.call(ApiKey::SaslHandshake, version, &req)
            .await
            .expect("a handshake answer")
    }

    async fn authenticate(&mut self, bytes: Vec<u8>) -> Option<SaslAuthenticateResponse> {
        let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(bytes));
        self.call(ApiKey::SaslAuthenticate, 2, &req).await
    }

    /// A raw SASL message after a v0 handshake; the raw answer, or `None` when closed.
    async fn raw(&mut self, message: &[u8]) -> Option<Bytes> {
        self.send_frame(message).await;
        self.read_frame().await
    }

    async fn metadata(&mut self) -> Option<MetadataResponse> {
        self.call(ApiKey::Metadata, 9, &MetadataRequest::default())
            .await
    }
}

#[tokio::test]
async fn scram_over_sasl_authenticate_lets_requests_through_and_proves_the_server() {
    let server = server().await;
    for m in Mechanism::ALL {
        let mut c = Conn::open(&server).await;
        let hs = c.handshake(1, m.name()).await;
        assert_eq!(hs.error_code, 0);
        let names: Vec<&str> = hs.mechanisms.iter().map(|m| m.as_str()).collect();
        assert_eq!(names, ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]);
        let (client, first) = ClientExchange::start(m, "alice", PASSWORD);
        let server_first = c.authenticate(first).await.unwrap();
        assert_eq!(server_first.error_code, 0);
        let (fin, expected) = client.answer(&server_first.auth_bytes).unwrap();
        let server_final = c.authenticate(fin).await.unwrap();
        assert_eq!(server_final.error_code, 0);
        assert_eq!(
            server_final.auth_bytes, expected,
            "v= carries the server's proof"
        );
        assert_eq!(server_final.session_lifetime_ms, 0);
        assert!(c.metadata().await.is_some());
        // A second exchange on the same connection is out of order.
        let again = c.handshake(1, "PLAIN").await;
        assert_eq!(again.error_code, 34, "ILLEGAL_SASL_STATE");
        assert!(c.metadata().await.is_none(), "closed after the refusal");
    }
}

#[tokio::test]
async fn handshake_v0_takes_raw_scram_and_plain_messages() {
    let server = server().await;
    let mut c = Conn::open(&server).await;
    assert_eq!(c.handshake(0, "SCRAM-SHA-256").await.error_code, 0);
    let (client, first) = ClientExchange::start(Mechanism::Sha256, "alice", PASSWORD);
    let server_first = c.raw(&first).await.expect("server-first");
    let (fin, expected) = client.answer(&server_first).unwrap();
    assert_eq!(c.raw(&fin).await.expect("server-final"), expected);
    assert!(c.metadata().await.is_some());

    let mut c = Conn::open(&server).await;
    assert_eq!(c.handshake(0, "PLAIN").await.error_code, 0);
    let token = format!("\0alice\0{PASSWORD}");
    assert_eq!(c.raw(token.as_bytes()).await.expect("an empty answer"), "");
    assert!(c.metadata().await.is_some());

    // A wrong password on the raw path closes the connection without an answer.
    let mut c = Conn::open(&server).await;
    assert_eq!(c.handshake(0, "PLAIN").await.error_code, 0);
    assert!(c.raw(b"\0alice\0wrong").await.is_none());
}

#[tokio::test]
async fn a_large_frame_before_authentication_closes_the_connection_unread() {
    let server = server().await;
    let mut c = Conn::open(&server).await;
    // Announces a 1 MiB frame (over the 512 KiB allowed before authentication) and
    // sends none of it: the server closes at once instead of waiting for and buffering it.
    c.s.write_all(&(1024 * 1024i32).to_be_bytes())
        .await
        .unwrap();
    assert!(c.read_frame().await.is_none(), "the connection is closed");
    // After a v0 handshake, a raw SASL message is held to the same bound.
    let mut c = Conn::open(&server).await;
    assert_eq!(c.handshake(0, "PLAIN").await.error_code, 0);
    c.s.write_all(&(1024 * 1024i32).to_be_bytes())
        .await
        .unwrap();
    assert!(c.read_frame().await.is_none(), "the connection is closed");
}

#[tokio::test]
async fn only_api_versions_and_sasl_are_answered_before_authentication() {
    let server = server().await;
    let mut c = Conn::open(&server).await;
    let versions: Option<ApiVersionsResponse> = c
        .call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
        .await;
    let versions = versions.expect("ApiVersions is answered");
    for key in [ApiKey::SaslHandshake, ApiKey::SaslAuthenticate] {
        assert!(versions.api_keys.iter().any(|k| k.api_key == key as i16));
    }
    assert!(
        c.metadata().await.is_none(),
        "Metadata closes the connection"
    );
}

#[tokio::test]
async fn failed_logins_are_answered_sasl_authentication_failed_and_close() {
    let server = server().await;
    // A wrong password, with PLAIN.
    let mut c = Conn::open(&server).await;
    c.handshake(1, "PLAIN").await;
    let answer = c.authenticate(b"\0alice\0wrong".to_vec()).await.unwrap();
    assert_eq!(answer.error_code, 58);
    let message = answer.error_message.unwrap();
    assert!(
        message.contains("PLAIN") && !message.contains("wrong"),
        "{message}"
    );
    assert!(c.metadata().await.is_none());
    // An unknown user, with SCRAM: refused at the proof, like a wrong password.
    let mut c = Conn::open(&server).await;
    c.handshake(1, "SCRAM-SHA-512").await;
    let (client, first) = ClientExchange::start(Mechanism::Sha512, "nobody", "pw");
    let server_first = c.authenticate(first).await.unwrap();
    assert_eq!(server_first.error_code, 0, "unknown users get a salt too");
    let (fin, _) = client.answer(&server_first.auth_bytes).unwrap();
    assert_eq!(c.authenticate(fin).await.unwrap().error_code, 58);
    assert!(c.metadata().await.is_none());
    // Garbage instead of a SCRAM message.
    let mut c = Conn::open(&server).await;
    c.handshake(1, "SCRAM-SHA-256").await;
    let answer = c.authenticate(vec![0xff; 5000]).await.unwrap();
    assert_eq!(answer.error_code, 58);
}

#[tokio::test]
async fn an_unsupported_mechanism_lists_the_enabled_ones_and_out_of_order_messages_close() {
    let server = server().await;
    let mut c = Conn::open(&server).await;
    let hs = c.handshake(1, "GSSAPI").await;
    assert_eq!(hs.error_code, 33, "UNSUPPORTED_SASL_MECHANISM");
    assert_eq!(hs.mechanisms.len(), 3);
    assert!(c.metadata().await.is_none());
    // SaslAuthenticate without a handshake.
    let mut c = Conn::open(&server).await;
    let answer = c.authenticate(b"\0alice\0pw".to_vec()).await.unwrap();
    assert_eq!(answer.error_code, 34, "ILLEGAL_SASL_STATE");
    assert!(c.metadata().await.is_none());
    // A raw message shorter than a request header is still read whole.
    let mut c = Conn::open(&server).await;
    c.handshake(0, "PLAIN").await;
    assert!(c.raw(b"\0a").await.is_none());
}

/// A connection authenticated as the super user `alice` (PLAIN).
async fn as_alice(server: &Server) -> Conn {
    let mut c = Conn::open(server).await;
    assert_eq!(c.handshake(1, "PLAIN").await.error_code, 0);
    let answer = c
        .authenticate(format!("\0alice\0{PASSWORD}").into_bytes())
        .await
        .unwrap();
    assert_eq!(answer.error_code, 0);
    c
}

fn creation(rtype: i8, name: &str, pattern: i8, op: i8) -> AclCreation {
    AclCreation::default()
        .with_resource_type(rtype)
        .with_resource_name(StrBytes::from_string(name.into()))
        .with_resource_pattern_type(pattern)
        .with_principal(StrBytes::from_static_str("User:bob"))
        .with_host(StrBytes::from_static_str("*"))
        .with_operation(op)
        .with_permission_type(3)
}

const TOPIC: i8 = 2;
const CLUSTER: i8 = 4;
const LITERAL: i8 = 3;
const PREFIXED: i8 = 4;
const READ: i8 = 3;

#[tokio::test]
async fn acls_are_created_matched_and_deleted_with_an_error_per_bad_item() {
    let server = server().await;
    let mut c = as_alice(&server).await;
    let req = CreateAclsRequest::default().with_creations(vec![
        creation(TOPIC, "orders", LITERAL, READ),
        creation(TOPIC, "ord", PREFIXED, READ),
        creation(1, "orders", LITERAL, READ),
        creation(TOPIC, "orders", 2, READ),
        creation(CLUSTER, "not-the-cluster", LITERAL, READ),
        creation(TOPIC, "orders", LITERAL, 9),
    ]);
    let created: CreateAclsResponse = c.call(ApiKey::CreateAcls, 1, &req).await.unwrap();
    let codes: Vec<i16> = created.results.iter().map(|r| r.error_code).collect();
    assert_eq!(
        codes,
        [0, 0, 42, 42, 42, 42],
        "INVALID_REQUEST for each bad item"
    );
    let matching = |name: &'static str| {
        DescribeAclsRequest::default()
            .with_resource_type_filter(TOPIC)
            .with_resource_name_filter(Some(StrBytes::from_static_str(name)))
            .with_pattern_type_filter(2)
            .with_principal_filter(None)
            .with_host_filter(None)
            .with_operation(1)
            .with_permission_type(1)
    };
    let described: DescribeAclsResponse = c
        .call(ApiKey::DescribeAcls, 1, &matching("orders"))
        .await
        .unwrap();
    assert_eq!(described.error_code, 0);
    assert_eq!(
        described.resources.len(),
        2,
        "the literal and the prefix apply"
    );
    let described: DescribeAclsResponse = c
        .call(ApiKey::DescribeAcls, 1, &matching("other"))
        .await
        .unwrap();
    assert!(described.resources.is_empty());
    let delete = DeleteAclsRequest::default().with_filters(vec![DeleteAclsFilter::default()
        .with_resource_type_filter(1)
        .with_resource_name_filter(None)
        .with_pattern_type_filter(PREFIXED)
        .with_principal_filter(None)
        .with_host_filter(None)
        .with_operation(1)
        .with_permission_type(1)]);
    let deleted: DeleteAclsResponse = c.call(ApiKey::DeleteAcls, 1, &delete).await.unwrap();
    let gone = &deleted.filter_results[0];
    assert_eq!(gone.error_code, 0);
    assert_eq!(gone.matching_acls.len(), 1);
    assert_eq!(gone.matching_acls[0].resource_name.as_str(), "ord");
}

fn upsert(
    name: &str,
    mechanism: i8,
    iterations: i32,
    password_len: usize,
) -> ScramCredentialUpsertion {
    ScramCredentialUpsertion::default()
        .with_name(StrBytes::from_string(name.into()))
        .with_mechanism(mechanism)
        .with_iterations(iterations)
        .with_salt(Bytes::from_static(b"salty"))
        .with_salted_password(Bytes::from(vec![1u8; password_len]))
}

#[tokio::test]
async fn scram_credentials_are_altered_with_kafka_checks_and_then_log_in() {
    let server = server().await;
    let mut c = as_alice(&server).await;
    let salted = salted_password(Mechanism::Sha256, b"bob-secret", b"salty", 4096);
    let req = AlterUserScramCredentialsRequest::default()
        .with_upsertions(vec![
            upsert("bob", 1, 4096, 32).with_salted_password(Bytes::from(salted)),
            upsert("weak", 2, 1000, 64),
            upsert("odd", 9, 4096, 64),
            upsert("twice", 1, 4096, 32),
            upsert("twice", 1, 8192, 32),
            upsert("short", 2, 4096, 10),
        ])
        .with_deletions(vec![ScramCredentialDeletion::default()
            .with_name(StrBytes::from_static_str("nobody"))
            .with_mechanism(1)]);
    let answer: AlterUserScramCredentialsResponse = c
        .call(ApiKey::AlterUserScramCredentials, 0, &req)
        .await
        .unwrap();
    let results: Vec<(&str, i16)> = answer
        .results
        .iter()
        .map(|r| (r.user.as_str(), r.error_code))
        .collect();
    assert_eq!(
        results,
        [
            ("nobody", 91),
            ("bob", 0),
            ("weak", 93),
            ("odd", 33),
            ("twice", 92),
            ("short", 93)
        ]
    );
    let describe = DescribeUserScramCredentialsRequest::default();
    let described: DescribeUserScramCredentialsResponse = c
        .call(ApiKey::DescribeUserScramCredentials, 0, &describe)
        .await
        .unwrap();
    let users: Vec<&str> = described.results.iter().map(|r| r.user.as_str()).collect();
    assert_eq!(users, ["alice", "bob"]);
    // bob logs in with the credential made from his salted password.
    let mut b = Conn::open(&server).await;
    b.handshake(1, "SCRAM-SHA-256").await;
    let (client, first) = ClientExchange::start(Mechanism::Sha256, "bob", "bob-secret");
    let server_first = b.authenticate(first).await.unwrap();
    let (fin, _) = client.answer(&server_first.auth_bytes).unwrap();
    assert_eq!(b.authenticate(fin).await.unwrap().error_code, 0);
    // bob is no super user and has no ACL: he may not see credentials.
    let denied: DescribeUserScramCredentialsResponse = b
        .call(ApiKey::DescribeUserScramCredentials, 0, &describe)
        .await
        .unwrap();
    assert_eq!(denied.error_code, 31, "CLUSTER_AUTHORIZATION_FAILED");
}

/// A connection as `bob` (no super user), whom `alice` first creates.
async fn as_bob(server: &Server, alice: &mut Conn) -> Conn {
    let salted = salted_password(Mechanism::Sha256, b"bob-secret", b"salty", 4096);
    let req = AlterUserScramCredentialsRequest::default()
        .with_upsertions(vec![
            upsert("bob", 1, 4096, 32).with_salted_password(Bytes::from(salted))
        ]);
    let made: AlterUserScramCredentialsResponse = alice
        .call(ApiKey::AlterUserScramCredentials, 0, &req)
        .await
        .unwrap();
    assert_eq!(made.results[0].error_code, 0);
    let mut b = Conn::open(server).await;
    b.handshake(1, "SCRAM-SHA-256").await;
    let (client, first) = ClientExchange::start(Mechanism::Sha256, "bob", "bob-secret");
    let server_first = b.authenticate(first).await.unwrap();
    let (fin, _) = client.answer(&server_first.auth_bytes).unwrap();
    assert_eq!(b.authenticate(fin).await.unwrap().error_code, 0);
    b
}

const ALTER_CONFIGS: i8 = 11;

#[tokio::test]
async fn altering_configs_needs_alter_configs_and_deleting_offsets_needs_delete_on_the_group() {
    use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    let server = server().await;
    let mut alice = as_alice(&server).await;
    for name in ["conf", "other"] {
        let create = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(name)))
            .with_num_partitions(1)
            .with_replication_factor(1)]);
        let made: CreateTopicsResponse =
            alice.call(ApiKey::CreateTopics, 5, &create).await.unwrap();
        assert_eq!(made.topics[0].error_code, 0);
    }
    let grant = CreateAclsRequest::default().with_creations(vec![creation(
        TOPIC,
        "conf",
        LITERAL,
        ALTER_CONFIGS,
    )]);
    let granted: CreateAclsResponse = alice.call(ApiKey::CreateAcls, 3, &grant).await.unwrap();
    assert_eq!(granted.results[0].error_code, 0);
    let mut bob = as_bob(&server, &mut alice).await;

    let resource = |rtype: i8, name: &'static str| {
        AlterConfigsResource::default()
            .with_resource_type(rtype)
            .with_resource_name(StrBytes::from_static_str(name))
            .with_configs(vec![AlterableConfig::default()
                .with_name(StrBytes::from_static_str("retention.ms"))
                .with_value(Some(StrBytes::from_static_str("3600000")))])
    };
    let req = AlterConfigsRequest::default().with_resources(vec![
        resource(TOPIC, "conf"),
        resource(TOPIC, "other"),
        resource(CLUSTER, ""),
    ]);
    let answer: AlterConfigsResponse = bob.call(ApiKey::AlterConfigs, 2, &req).await.unwrap();
    let codes: Vec<i16> = answer.responses.iter().map(|r| r.error_code).collect();
    assert_eq!(codes, [0, 29, 31], "{answer:?}");
    // A super user is allowed the broker, which still refuses: its settings are static.
    let answer: AlterConfigsResponse = alice
        .call(
            ApiKey::AlterConfigs,
            2,
            &AlterConfigsRequest::default().with_resources(vec![resource(CLUSTER, "")]),
        )
        .await
        .unwrap();
    assert_eq!(answer.responses[0].error_code, 40, "INVALID_CONFIG");

    let describe = DescribeConfigsRequest::default().with_resources(vec![
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(StrBytes::from_static_str("conf"))
            .with_configuration_keys(Some(vec![StrBytes::from_static_str("retention.ms")])),
    ]);
    let described: DescribeConfigsResponse = alice
        .call(ApiKey::DescribeConfigs, 4, &describe)
        .await
        .unwrap();
    let e = &described.results[0].configs[0];
    assert_eq!(e.value.as_deref(), Some("3600000"));
    assert_eq!(e.config_source, 1, "DYNAMIC_TOPIC_CONFIG");
    // AlterConfigs implies DescribeConfigs (as in Kafka), on that topic only.
    let seen: DescribeConfigsResponse = bob
        .call(ApiKey::DescribeConfigs, 4, &describe)
        .await
        .unwrap();
    assert_eq!(seen.results[0].error_code, 0);
    let other = DescribeConfigsRequest::default().with_resources(vec![
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(StrBytes::from_static_str("other")),
    ]);
    let denied: DescribeConfigsResponse =
        bob.call(ApiKey::DescribeConfigs, 4, &other).await.unwrap();
    assert_eq!(denied.results[0].error_code, 29);

    let delete = OffsetDeleteRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g")))
        .with_topics(vec![OffsetDeleteRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("conf")))
            .with_partitions(vec![OffsetDeleteRequestPartition::default()])]);
    let refused: OffsetDeleteResponse = bob.call(ApiKey::OffsetDelete, 0, &delete).await.unwrap();
    assert_eq!(refused.error_code, 30, "GROUP_AUTHORIZATION_FAILED");
    let unknown: OffsetDeleteResponse = alice.call(ApiKey::OffsetDelete, 0, &delete).await.unwrap();
    assert_eq!(unknown.error_code, 69, "GROUP_ID_NOT_FOUND");
}
