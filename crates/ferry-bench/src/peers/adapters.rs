//! One adapter per system: how a workload creates a destination, publishes records and
//! waits for the system's acknowledgement, and receives and acknowledges records.
//!
//! Each adapter uses the system's own client library the way its documentation
//! recommends for durable, acknowledged delivery: Ferry's HTTP API, librdkafka (through
//! `rdkafka`) against Ferry's Kafka listener, `async-nats` for NATS JetStream, `lapin`
//! for RabbitMQ and `redis` for Redis Streams.

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use serde_json::{json, Value};
use std::future::Future;
use std::time::Duration;

/// How long a receive waits for its first record.
const RECEIVE_WAIT: Duration = Duration::from_millis(100);

/// A producer connection: `publish` returns once the system has acknowledged every
/// record of the batch. Clones share the connection, so that one publisher can keep
/// several publishes in flight (one clone each), as its client library allows.
pub trait Producer: Clone + Send + 'static {
    fn publish(&mut self, records: &[Bytes]) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// A consumer connection: `receive` returns up to `max` records (waiting up to about
/// 100 ms for the first, then taking what is already there); `ack` acknowledges
/// everything received since the previous `ack`.
pub trait Consumer: Send + 'static {
    fn receive(&mut self, max: usize) -> impl Future<Output = anyhow::Result<Vec<Bytes>>> + Send;
    fn ack(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// A system under test, already running.
pub trait Peer: Send + Sync + 'static {
    type P: Producer;
    type C: Consumer;
    /// Creates the destination `name` (topic, stream or queue) and its consumer group.
    fn create(&self, name: &str) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Deletes it with its data.
    fn delete(&self, name: &str) -> impl Future<Output = anyhow::Result<()>> + Send;
    fn producer(&self, name: &str) -> impl Future<Output = anyhow::Result<Self::P>> + Send;
    /// Consumer `id` of the destination's one consumer group.
    fn consumer(
        &self,
        name: &str,
        id: usize,
    ) -> impl Future<Output = anyhow::Result<Self::C>> + Send;
}

/// Waits up to [`RECEIVE_WAIT`] for the first item of `stream`, then takes what is ready
/// without waiting, up to `max` items in all.
async fn take_ready<S, T, E>(stream: &mut S, max: usize) -> anyhow::Result<Vec<T>>
where
    S: futures_util::Stream<Item = Result<T, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut out = Vec::new();
    match tokio::time::timeout(RECEIVE_WAIT, stream.next()).await {
        Err(_) | Ok(None) => return Ok(out),
        Ok(Some(item)) => out.push(item.map_err(|e| anyhow::anyhow!("receive: {e}"))?),
    }
    while out.len() < max {
        match stream.next().now_or_never() {
            Some(Some(item)) => out.push(item.map_err(|e| anyhow::anyhow!("receive: {e}"))?),
            _ => break,
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- Ferry over HTTP

/// Ferry's HTTP API: a topic of 4 partitions (durability `always`) and a queue
/// subscription; batches go in one produce request; consumers pull and ack leases.
#[derive(Clone)]
pub struct FerryHttp {
    pub url: String,
    pub http: reqwest::Client,
    /// Each producer and consumer speaks HTTP/2 over its own connection, with all its
    /// requests in flight multiplexed on it (HTTP/1.1 otherwise: one connection per
    /// request in flight).
    pub http2: bool,
}

impl FerryHttp {
    pub fn new(url: String) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            // Single-record publishers keep up to a thousand requests in flight, each
            // on its own connection: keep them all for reuse.
            .pool_max_idle_per_host(4096)
            .build()?;
        Ok(Self {
            url,
            http,
            http2: false,
        })
    }

    pub fn new_http2(url: String) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder().http2_prior_knowledge().build()?,
            http2: true,
            ..Self::new(url)?
        })
    }

    /// The client a new producer or consumer uses: over HTTP/2 a client of its own (one
    /// connection), over HTTP/1.1 the shared pool.
    fn own_client(&self) -> anyhow::Result<reqwest::Client> {
        if self.http2 {
            Ok(reqwest::Client::builder().http2_prior_knowledge().build()?)
        } else {
            Ok(self.http.clone())
        }
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        crate::queue::post(&self.http, format!("{}{path}", self.url), body).await
    }
}

/// Creates a topic of 4 partitions kept forever, through Ferry's HTTP API.
async fn ferry_topic(http: &reqwest::Client, url: &str, name: &str) -> anyhow::Result<()> {
    crate::queue::post(
        http,
        format!("{url}/v1/topics"),
        json!({"name": name, "partitions": 4, "retention_ms": -1}),
    )
    .await?;
    Ok(())
}

async fn ferry_delete(http: &reqwest::Client, url: &str, name: &str) -> anyhow::Result<()> {
    let r = http
        .delete(format!("{url}/v1/topics/{name}"))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "delete {name}: {}", r.status());
    Ok(())
}

impl Peer for FerryHttp {
    type P = FerryHttpProducer;
    type C = FerryHttpConsumer;

    async fn create(&self, name: &str) -> anyhow::Result<()> {
        ferry_topic(&self.http, &self.url, name).await?;
        self.post(
            "/v1/subscriptions",
            json!({"name": format!("{name}-work"), "topic": name, "start": "earliest",
                   "max_in_flight": 100000, "max_in_flight_per_consumer": 10000,
                   "max_deliveries": 0}),
        )
        .await?;
        Ok(())
    }

    async fn delete(&self, name: &str) -> anyhow::Result<()> {
        ferry_delete(&self.http, &self.url, name).await
    }

    async fn producer(&self, name: &str) -> anyhow::Result<FerryHttpProducer> {
        Ok(FerryHttpProducer {
            http: self.own_client()?,
            url: format!("{}/v1/topics/{name}/records", self.url),
        })
    }

    async fn consumer(&self, name: &str, id: usize) -> anyhow::Result<FerryHttpConsumer> {
        Ok(FerryHttpConsumer {
            peer: FerryHttp {
                http: self.own_client()?,
                ..self.clone()
            },
            sub: format!("{name}-work"),
            consumer: format!("c{id}"),
            leases: Vec::new(),
        })
    }
}

#[derive(Clone)]
pub struct FerryHttpProducer {
    http: reqwest::Client,
    url: String,
}

impl Producer for FerryHttpProducer {
    async fn publish(&mut self, records: &[Bytes]) -> anyhow::Result<()> {
        // The payloads are ASCII; each is sent as a JSON string, which Ferry stores as
        // its JSON text (the quotes make up the 1 KiB).
        let mut body = String::with_capacity(records.len() * (super::RECORD_BYTES + 16) + 16);
        body.push_str("{\"records\":[");
        for (i, r) in records.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            let text = std::str::from_utf8(&r[..r.len().saturating_sub(2)])?;
            body.push_str("{\"value\":\"");
            body.push_str(text);
            body.push_str("\"}");
        }
        body.push_str("]}");
        crate::http::produce(&self.http, &self.url, body).await
    }
}

pub struct FerryHttpConsumer {
    peer: FerryHttp,
    sub: String,
    consumer: String,
    leases: Vec<Value>,
}

impl Consumer for FerryHttpConsumer {
    async fn receive(&mut self, max: usize) -> anyhow::Result<Vec<Bytes>> {
        let v = self
            .peer
            .post(
                &format!("/v1/subscriptions/{}/pull", self.sub),
                json!({"max_records": max, "wait_ms": RECEIVE_WAIT.as_millis() as u64,
                       "consumer": self.consumer}),
            )
            .await?;
        let mut out = Vec::new();
        for r in v["records"].as_array().into_iter().flatten() {
            self.leases.push(r["lease_id"].clone());
            let value = r["value"].as_str().unwrap_or_default();
            out.push(Bytes::copy_from_slice(value.as_bytes()));
        }
        Ok(out)
    }

    async fn ack(&mut self) -> anyhow::Result<()> {
        if self.leases.is_empty() {
            return Ok(());
        }
        let leases = std::mem::take(&mut self.leases);
        self.peer
            .post(
                &format!("/v1/subscriptions/{}/ack", self.sub),
                json!({ "lease_ids": leases }),
            )
            .await?;
        Ok(())
    }
}

// ---------------------------------------------------------------- Kafka protocol

/// A Kafka broker through librdkafka: acks=all, no compression, a consumer group with
/// explicit offset commits. Used against Ferry's Kafka listener (topics are made over
/// Ferry's HTTP API, 4 partitions, durability `always`).
#[derive(Clone)]
pub struct Kafka {
    pub bootstrap: String,
    pub admin: FerryHttp,
}

impl Peer for Kafka {
    type P = KafkaProducer;
    type C = KafkaConsumer;

    async fn create(&self, name: &str) -> anyhow::Result<()> {
        ferry_topic(&self.admin.http, &self.admin.url, name).await
    }

    async fn delete(&self, name: &str) -> anyhow::Result<()> {
        ferry_delete(&self.admin.http, &self.admin.url, name).await
    }

    async fn producer(&self, name: &str) -> anyhow::Result<KafkaProducer> {
        let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("acks", "all")
            .set("enable.idempotence", "false")
            .set("compression.type", "none")
            .set("linger.ms", "1")
            .create()?;
        Ok(KafkaProducer {
            producer,
            topic: name.to_string(),
        })
    }

    async fn consumer(&self, name: &str, _id: usize) -> anyhow::Result<KafkaConsumer> {
        use rdkafka::consumer::Consumer as _;
        let consumer: rdkafka::consumer::StreamConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", format!("{name}-work"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "100")
            .create()?;
        consumer.subscribe(&[name])?;
        Ok(KafkaConsumer {
            consumer,
            pending: false,
        })
    }
}

#[derive(Clone)]
pub struct KafkaProducer {
    producer: rdkafka::producer::FutureProducer,
    topic: String,
}

impl Producer for KafkaProducer {
    async fn publish(&mut self, records: &[Bytes]) -> anyhow::Result<()> {
        let mut waits = Vec::with_capacity(records.len());
        for r in records {
            let record = rdkafka::producer::FutureRecord::<(), [u8]>::to(&self.topic).payload(r);
            let wait = self
                .producer
                .send_result(record)
                .map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
            waits.push(wait);
        }
        for w in waits {
            w.await
                .map_err(|_| anyhow::anyhow!("produce: delivery cancelled"))?
                .map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
        }
        Ok(())
    }
}

pub struct KafkaConsumer {
    consumer: rdkafka::consumer::StreamConsumer,
    pending: bool,
}

impl Consumer for KafkaConsumer {
    async fn receive(&mut self, max: usize) -> anyhow::Result<Vec<Bytes>> {
        use rdkafka::Message as _;
        let mut out = Vec::new();
        match tokio::time::timeout(RECEIVE_WAIT, self.consumer.recv()).await {
            Err(_) => return Ok(out),
            Ok(m) => out.push(Bytes::copy_from_slice(m?.payload().unwrap_or_default())),
        }
        while out.len() < max {
            match self.consumer.recv().now_or_never() {
                Some(m) => out.push(Bytes::copy_from_slice(m?.payload().unwrap_or_default())),
                None => break,
            }
        }
        self.pending = true;
        Ok(out)
    }

    async fn ack(&mut self) -> anyhow::Result<()> {
        use rdkafka::consumer::Consumer as _;
        if std::mem::take(&mut self.pending) {
            self.consumer
                .commit_consumer_state(rdkafka::consumer::CommitMode::Async)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- NATS JetStream

/// NATS JetStream: a stream with file storage and a durable pull consumer with explicit
/// acks, shared by the consumers. The server runs with `sync_interval: always`.
#[derive(Clone)]
pub struct Nats {
    pub url: String,
}

impl Nats {
    async fn js(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        let client = async_nats::connect(&self.url).await?;
        Ok(async_nats::jetstream::new(client))
    }
}

impl Peer for Nats {
    type P = NatsProducer;
    type C = NatsConsumer;

    async fn create(&self, name: &str) -> anyhow::Result<()> {
        use async_nats::jetstream::{consumer, stream};
        let js = self.js().await?;
        let s = js
            .create_stream(stream::Config {
                name: name.to_string(),
                subjects: vec![name.to_string()],
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await?;
        s.create_consumer(consumer::pull::Config {
            durable_name: Some("work".to_string()),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: 100_000,
            ..Default::default()
        })
        .await?;
        Ok(())
    }

    async fn delete(&self, name: &str) -> anyhow::Result<()> {
        self.js().await?.delete_stream(name).await?;
        Ok(())
    }

    async fn producer(&self, name: &str) -> anyhow::Result<NatsProducer> {
        Ok(NatsProducer {
            js: self.js().await?,
            subject: name.to_string(),
        })
    }

    async fn consumer(&self, name: &str, _id: usize) -> anyhow::Result<NatsConsumer> {
        use async_nats::jetstream::consumer::PullConsumer;
        let js = self.js().await?;
        let c: PullConsumer = js
            .get_stream(name)
            .await?
            .get_consumer("work")
            .await
            .map_err(|e| anyhow::anyhow!("consumer: {e}"))?;
        let messages = c.stream().max_messages_per_batch(500).messages().await?;
        Ok(NatsConsumer {
            messages,
            pending: Vec::new(),
        })
    }
}

#[derive(Clone)]
pub struct NatsProducer {
    js: async_nats::jetstream::Context,
    subject: String,
}

impl Producer for NatsProducer {
    async fn publish(&mut self, records: &[Bytes]) -> anyhow::Result<()> {
        let mut acks = Vec::with_capacity(records.len());
        for r in records {
            acks.push(self.js.publish(self.subject.clone(), r.clone()).await?);
        }
        for a in acks {
            a.await?;
        }
        Ok(())
    }
}

pub struct NatsConsumer {
    messages: async_nats::jetstream::consumer::pull::Stream,
    pending: Vec<async_nats::jetstream::Message>,
}

impl Consumer for NatsConsumer {
    async fn receive(&mut self, max: usize) -> anyhow::Result<Vec<Bytes>> {
        let got = take_ready(&mut self.messages, max).await?;
        let out = got.iter().map(|m| m.payload.clone()).collect();
        self.pending.extend(got);
        Ok(out)
    }

    async fn ack(&mut self) -> anyhow::Result<()> {
        for m in self.pending.drain(..) {
            m.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- RabbitMQ

/// RabbitMQ: a durable quorum or classic queue on the default exchange, persistent
/// messages, publisher confirms, manual acks with a prefetch of 500.
#[derive(Clone)]
pub struct Rabbit {
    pub url: String,
    pub quorum: bool,
}

impl Rabbit {
    async fn channel(&self) -> anyhow::Result<(lapin::Connection, lapin::Channel)> {
        let conn =
            lapin::Connection::connect(&self.url, lapin::ConnectionProperties::default()).await?;
        let ch = conn.create_channel().await?;
        Ok((conn, ch))
    }
}

impl Peer for Rabbit {
    type P = RabbitProducer;
    type C = RabbitConsumer;

    async fn create(&self, name: &str) -> anyhow::Result<()> {
        use lapin::types::{AMQPValue, FieldTable};
        let (_conn, ch) = self.channel().await?;
        let mut args = FieldTable::default();
        let kind = if self.quorum { "quorum" } else { "classic" };
        args.insert("x-queue-type".into(), AMQPValue::LongString(kind.into()));
        ch.queue_declare(
            name.into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await?;
        Ok(())
    }

    async fn delete(&self, name: &str) -> anyhow::Result<()> {
        let (_conn, ch) = self.channel().await?;
        ch.queue_delete(name.into(), Default::default()).await?;
        Ok(())
    }

    async fn producer(&self, name: &str) -> anyhow::Result<RabbitProducer> {
        let (conn, ch) = self.channel().await?;
        ch.confirm_select(Default::default()).await?;
        Ok(RabbitProducer {
            _conn: std::sync::Arc::new(conn),
            ch,
            queue: name.to_string(),
        })
    }

    async fn consumer(&self, name: &str, id: usize) -> anyhow::Result<RabbitConsumer> {
        let (conn, ch) = self.channel().await?;
        ch.basic_qos(500, Default::default()).await?;
        let deliveries = ch
            .basic_consume(
                name.into(),
                format!("c{id}").into(),
                Default::default(),
                Default::default(),
            )
            .await?;
        Ok(RabbitConsumer {
            _conn: conn,
            ch,
            deliveries,
            last_tag: None,
        })
    }
}

#[derive(Clone)]
pub struct RabbitProducer {
    _conn: std::sync::Arc<lapin::Connection>,
    ch: lapin::Channel,
    queue: String,
}

impl Producer for RabbitProducer {
    async fn publish(&mut self, records: &[Bytes]) -> anyhow::Result<()> {
        let mut confirms = Vec::with_capacity(records.len());
        for r in records {
            let c = self
                .ch
                .basic_publish(
                    "".into(),
                    self.queue.as_str().into(),
                    Default::default(),
                    r,
                    lapin::BasicProperties::default().with_delivery_mode(2),
                )
                .await?;
            confirms.push(c);
        }
        for c in confirms {
            anyhow::ensure!(c.await?.is_ack(), "publish: the broker refused (nack)");
        }
        Ok(())
    }
}

pub struct RabbitConsumer {
    _conn: lapin::Connection,
    ch: lapin::Channel,
    deliveries: lapin::Consumer,
    last_tag: Option<u64>,
}

impl Consumer for RabbitConsumer {
    async fn receive(&mut self, max: usize) -> anyhow::Result<Vec<Bytes>> {
        let got = take_ready(&mut self.deliveries, max).await?;
        if let Some(d) = got.last() {
            self.last_tag = Some(d.delivery_tag);
        }
        Ok(got.into_iter().map(|d| Bytes::from(d.data)).collect())
    }

    async fn ack(&mut self) -> anyhow::Result<()> {
        if let Some(tag) = self.last_tag.take() {
            self.ch
                .basic_ack(tag, lapin::options::BasicAckOptions { multiple: true })
                .await?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- Redis Streams

/// Redis Streams: XADD in pipelines, one consumer group read with XREADGROUP and
/// acknowledged with XACK. The server's `appendfsync` setting makes the row durable
/// (`always`) or not (`everysec`).
#[derive(Clone)]
pub struct Redis {
    pub url: String,
}

impl Redis {
    async fn conn(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.url.as_str())?;
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        Ok(client
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }
}

impl Peer for Redis {
    type P = RedisProducer;
    type C = RedisConsumer;

    async fn create(&self, name: &str) -> anyhow::Result<()> {
        let mut c = self.conn().await?;
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(name)
            .arg("work")
            .arg("0")
            .arg("MKSTREAM")
            .query_async::<()>(&mut c)
            .await?;
        Ok(())
    }

    async fn delete(&self, name: &str) -> anyhow::Result<()> {
        let mut c = self.conn().await?;
        redis::cmd("DEL")
            .arg(name)
            .query_async::<()>(&mut c)
            .await?;
        Ok(())
    }

    async fn producer(&self, name: &str) -> anyhow::Result<RedisProducer> {
        Ok(RedisProducer {
            conn: self.conn().await?,
            key: name.to_string(),
        })
    }

    async fn consumer(&self, name: &str, id: usize) -> anyhow::Result<RedisConsumer> {
        Ok(RedisConsumer {
            conn: self.conn().await?,
            key: name.to_string(),
            name: format!("c{id}"),
            ids: Vec::new(),
        })
    }
}

#[derive(Clone)]
pub struct RedisProducer {
    conn: redis::aio::MultiplexedConnection,
    key: String,
}

impl Producer for RedisProducer {
    async fn publish(&mut self, records: &[Bytes]) -> anyhow::Result<()> {
        let mut pipe = redis::pipe();
        for r in records {
            pipe.cmd("XADD")
                .arg(&self.key)
                .arg("*")
                .arg("v")
                .arg(r.as_ref())
                .ignore();
        }
        pipe.query_async::<()>(&mut self.conn).await?;
        Ok(())
    }
}

pub struct RedisConsumer {
    conn: redis::aio::MultiplexedConnection,
    key: String,
    name: String,
    ids: Vec<String>,
}

impl Consumer for RedisConsumer {
    async fn receive(&mut self, max: usize) -> anyhow::Result<Vec<Bytes>> {
        let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("work")
            .arg(&self.name)
            .arg("COUNT")
            .arg(max)
            .arg("BLOCK")
            .arg(RECEIVE_WAIT.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.key)
            .arg(">")
            .query_async(&mut self.conn)
            .await?;
        let mut out = Vec::new();
        for key in reply.into_iter().flat_map(|r| r.keys) {
            for entry in key.ids {
                if let Some(redis::Value::BulkString(v)) = entry.map.get("v") {
                    out.push(Bytes::copy_from_slice(v));
                }
                self.ids.push(entry.id);
            }
        }
        Ok(out)
    }

    async fn ack(&mut self) -> anyhow::Result<()> {
        if self.ids.is_empty() {
            return Ok(());
        }
        let ids = std::mem::take(&mut self.ids);
        redis::cmd("XACK")
            .arg(&self.key)
            .arg("work")
            .arg(&ids)
            .query_async::<()>(&mut self.conn)
            .await?;
        Ok(())
    }
}
