//! The client commands: `ferry topic`, `ferry produce`, `ferry consume` (`ferry sub` is
//! in `subs`).

use crate::cli::{ClientArgs, ConsumeArgs, ProduceArgs, TopicCommand, TopicSettings};
use crate::output;
use crate::time::parse_time_ms;
use anyhow::{bail, Context};
use base64::Engine;
use ferry_client::{Client, Placed, RecordOut};
use serde_json::{json, Map, Value};
use std::io::BufRead;
use std::time::Duration;

fn settings_json(partitions: Option<u32>, s: &TopicSettings) -> anyhow::Result<Map<String, Value>> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.to_string(), v);
        }
    };
    put("partitions", partitions.map(Value::from));
    put("retention_ms", s.retention_ms.map(Value::from));
    put("retention_bytes", s.retention_bytes.map(Value::from));
    put("segment_bytes", s.segment_bytes.map(Value::from));
    put("segment_ms", s.segment_ms.map(Value::from));
    put("max_record_bytes", s.max_record_bytes.map(Value::from));
    put("flush_interval_ms", s.flush_interval_ms.map(Value::from));
    put(
        "delete_retention_ms",
        s.delete_retention_ms.map(Value::from),
    );
    put(
        "min_compaction_lag_ms",
        s.min_compaction_lag_ms.map(Value::from),
    );
    put(
        "min_cleanable_dirty_ratio",
        s.min_cleanable_dirty_ratio.map(Value::from),
    );
    put(
        "max_compaction_lag_ms",
        s.max_compaction_lag_ms.map(Value::from),
    );
    put("cleanup_policy", s.cleanup_policy.clone().map(Value::from));
    if let Some(d) = &s.durability {
        if !["always", "interval", "never"].contains(&d.as_str()) {
            bail!("--durability must be always, interval or never, got {d:?}");
        }
        m.insert("durability".into(), Value::from(d.clone()));
    }
    Ok(m)
}

fn limit_text(v: &Value) -> String {
    match v.as_i64() {
        Some(-1) => "forever".into(),
        Some(n) => n.to_string(),
        None => "-".into(),
    }
}

fn topic_rows(topics: &[Value]) -> Vec<Vec<String>> {
    topics
        .iter()
        .map(|t| {
            let stats = t["partition_stats"].as_array().cloned().unwrap_or_default();
            let size: u64 = stats.iter().filter_map(|p| p["size_bytes"].as_u64()).sum();
            let records: u64 = stats
                .iter()
                .map(|p| {
                    p["latest"]
                        .as_u64()
                        .unwrap_or(0)
                        .saturating_sub(p["earliest"].as_u64().unwrap_or(0))
                })
                .sum();
            vec![
                t["name"].as_str().unwrap_or_default().to_string(),
                t["partitions"].to_string(),
                records.to_string(),
                size.to_string(),
                limit_text(&t["retention_ms"]),
                t["durability"].as_str().unwrap_or_default().to_string(),
            ]
        })
        .collect()
}

/// The columns of `topic_rows`.
const TOPIC_HEADERS: [&str; 6] = [
    "TOPIC",
    "PARTITIONS",
    "RECORDS",
    "BYTES",
    "RETENTION_MS",
    "DURABILITY",
];

fn print_topic(t: &Value) -> anyhow::Result<()> {
    output::table(&TOPIC_HEADERS, &topic_rows(std::slice::from_ref(t)))?;
    output::line("")?;
    let rows: Vec<Vec<String>> = t["partition_stats"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            vec![
                p["partition"].to_string(),
                p["earliest"].to_string(),
                p["latest"].to_string(),
                p["size_bytes"].to_string(),
                p["segments"].to_string(),
            ]
        })
        .collect();
    output::table(
        &["PARTITION", "EARLIEST", "LATEST", "BYTES", "SEGMENTS"],
        &rows,
    )?;
    Ok(())
}

pub async fn topic(cmd: TopicCommand) -> anyhow::Result<()> {
    match cmd {
        TopicCommand::Create {
            name,
            partitions,
            settings,
            client,
        } => topic_create(name, partitions, &settings, &client).await,
        TopicCommand::List(client) => topic_list(&client).await,
        TopicCommand::Describe(a) => {
            let t = a.client.client()?.describe_topic(&a.name).await?;
            output::answer(a.client.json, &t, || print_topic(&t))
        }
        TopicCommand::Update {
            name,
            partitions,
            settings,
            client,
        } => topic_update(&name, partitions, &settings, &client).await,
        TopicCommand::Delete(a) => {
            a.client.client()?.delete_topic(&a.name).await?;
            output::answer_line(a.client.json, &json!({"deleted": a.name}), || {
                format!("Deleted topic {}.", a.name)
            })
        }
        TopicCommand::DeleteRecords {
            name,
            partition,
            before,
            client,
        } => {
            let before_offset = match before.as_str() {
                "latest" => None,
                n => Some(n.parse::<u64>().map_err(|_| {
                    anyhow::anyhow!(
                        "--before takes an offset (a non-negative integer) or `latest`, not {n:?}"
                    )
                })?),
            };
            let r = client
                .client()?
                .delete_records(&name, partition, before_offset)
                .await?;
            output::answer_line(client.json, &r, || {
                format!(
                    "Partition {partition} of {name} now starts at offset {} (latest {}).",
                    r["earliest"], r["latest"]
                )
            })
        }
    }
}

async fn topic_create(
    name: String,
    partitions: Option<u32>,
    settings: &TopicSettings,
    client: &ClientArgs,
) -> anyhow::Result<()> {
    let mut body = settings_json(partitions, settings)?;
    body.insert("name".into(), Value::from(name));
    let t = client.client()?.create_topic(&Value::Object(body)).await?;
    output::answer_line(client.json, &t, || {
        format!(
            "Created topic {} with {} partition(s).",
            t["name"].as_str().unwrap_or_default(),
            t["partitions"]
        )
    })
}

async fn topic_list(client: &ClientArgs) -> anyhow::Result<()> {
    let v = client.client()?.list_topics().await?;
    output::answer(client.json, &v, || {
        let topics = v["topics"].as_array().cloned().unwrap_or_default();
        Ok(output::table(&TOPIC_HEADERS, &topic_rows(&topics))?)
    })
}

async fn topic_update(
    name: &str,
    partitions: Option<u32>,
    settings: &TopicSettings,
    client: &ClientArgs,
) -> anyhow::Result<()> {
    let body = settings_json(partitions, settings)?;
    if body.is_empty() {
        bail!("nothing to change: give --partitions or a setting such as --retention-ms");
    }
    let t = client
        .client()?
        .update_topic(name, &Value::Object(body))
        .await?;
    output::answer(client.json, &t, || print_topic(&t))
}

fn value_json(text: &str, format: &str) -> anyhow::Result<Value> {
    match format {
        "text" => Ok(
            json!({ "base64": base64::engine::general_purpose::STANDARD.encode(text.as_bytes()) }),
        ),
        "json" => serde_json::from_str(text).with_context(|| {
            format!("not valid JSON (use --format text for plain text): {text:?}")
        }),
        other => bail!("--format must be text or json, got {other:?}"),
    }
}

pub async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let client = args.client.client()?;
    // The array form keeps a name given more than once.
    let mut headers = Vec::new();
    for h in &args.headers {
        let Some((k, v)) = h.split_once('=') else {
            bail!("--header must look like NAME=VALUE, got {h:?}")
        };
        headers.push(json!({"key": k, "value": v}));
    }
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let make = |key: Option<&str>, value: &str| -> anyhow::Result<Value> {
        let mut r = Map::new();
        if let Some(k) = key {
            r.insert("key".into(), Value::from(k));
        }
        r.insert("value".into(), value_json(value, &args.format)?);
        if !headers.is_empty() {
            r.insert("headers".into(), Value::Array(headers.clone()));
        }
        if let Some(p) = args.partition {
            r.insert("partition".into(), Value::from(p));
        }
        Ok(Value::Object(r))
    };
    let placed = match &args.value {
        Some(v) => {
            client
                .produce(&args.topic, vec![make(args.key.as_deref(), v)?])
                .await?
                .offsets
        }
        None => produce_lines(&client, &args, make).await?,
    };
    print_placed(&args, &placed)
}

/// Produces each line of standard input as a record made by `make` from its key and
/// value, `--batch` records a request.
async fn produce_lines(
    client: &Client,
    args: &ProduceArgs,
    make: impl Fn(Option<&str>, &str) -> anyhow::Result<Value>,
) -> anyhow::Result<Vec<Placed>> {
    let mut placed = Vec::new();
    let stdin = std::io::stdin();
    let mut pending = Vec::new();
    for line in stdin.lock().lines() {
        let line = line.context("reading standard input")?;
        let (key, value) = match &args.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(k.to_string()), v.to_string()),
                None => (args.key.clone(), line.clone()),
            },
            None => (args.key.clone(), line.clone()),
        };
        pending.push(make(key.as_deref(), &value)?);
        if pending.len() >= args.batch {
            placed.extend(
                client
                    .produce(&args.topic, std::mem::take(&mut pending))
                    .await?
                    .offsets,
            );
        }
    }
    if !pending.is_empty() {
        placed.extend(client.produce(&args.topic, pending).await?.offsets);
    }
    Ok(placed)
}

fn print_placed(args: &ProduceArgs, placed: &[Placed]) -> anyhow::Result<()> {
    if args.client.json {
        output::json(
            &json!({ "offsets": placed.iter().map(|p| json!({"partition": p.partition, "offset": p.offset})).collect::<Vec<_>>() }),
        )?;
    } else if placed.len() == 1 {
        output::line(&format!(
            "Produced 1 record to {} partition {} at offset {}.",
            args.topic, placed[0].partition, placed[0].offset
        ))?;
    } else {
        output::line(&format!(
            "Produced {} records to {}.",
            placed.len(),
            args.topic
        ))?;
    }
    Ok(())
}

pub(crate) fn text_of(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::String(s) => s.clone(),
        Value::Object(m) if m.len() == 1 && m.contains_key("base64") => {
            let b = m["base64"].as_str().unwrap_or_default();
            match base64::engine::general_purpose::STANDARD
                .decode(b)
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
            {
                Some(s) => s,
                None => format!("base64:{b}"),
            }
        }
        other => other.to_string(),
    }
}

fn print_record(partition: u32, r: &RecordOut, json_out: bool) -> std::io::Result<()> {
    if json_out {
        let line = json!({
            "partition": partition, "offset": r.offset, "timestamp": r.timestamp,
            "key": r.key, "value": r.value, "headers": r.headers,
        });
        return output::line(&line.to_string());
    }
    let headers = if r.headers.is_empty() {
        String::new()
    } else {
        format!(
            "  {}",
            r.headers
                .iter()
                .map(|(k, v)| format!("{k}={}", text_of(v)))
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    output::line(&format!(
        "{partition:>3} {:>8}  {}  {}{headers}",
        r.offset,
        text_of(&r.key),
        text_of(&r.value)
    ))
}

pub async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    let client = args.client.client()?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<anyhow::Result<(u32, Vec<RecordOut>)>>(16);
    for (p, offset, end) in start_offsets(&client, &args).await? {
        let reader = Reader {
            client: client.clone(),
            topic: args.topic.clone(),
            partition: p,
            offset,
            end,
            follow: args.follow,
        };
        tokio::spawn(reader.run(tx.clone()));
    }
    drop(tx);
    let mut printed = 0u64;
    let max = args.max.unwrap_or(u64::MAX);
    while let Some(msg) = rx.recv().await {
        let (p, records) = msg?;
        for r in &records {
            if printed >= max {
                return Ok(());
            }
            print_record(p, r, args.client.json)?;
            printed += 1;
        }
        if printed >= max {
            return Ok(());
        }
    }
    Ok(())
}

/// Each partition to read with the offset `--from` names and its end when asked:
/// `(partition, start, end)`.
async fn start_offsets(
    client: &Client,
    args: &ConsumeArgs,
) -> anyhow::Result<Vec<(u32, u64, u64)>> {
    let topic = client.describe_topic(&args.topic).await?;
    let count = topic["partitions"].as_u64().unwrap_or(0) as u32;
    let partitions: Vec<u32> = match args.partition {
        Some(p) if p >= count => bail!(
            "topic {} has {count} partition(s); --partition {p} does not exist",
            args.topic
        ),
        Some(p) => vec![p],
        None => (0..count).collect(),
    };
    let stats = topic["partition_stats"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let bound = |p: u32, k: &str| {
        stats
            .get(p as usize)
            .and_then(|s| s[k].as_u64())
            .unwrap_or(0)
    };
    let mut start = Vec::new();
    for &p in &partitions {
        let offset = match args.from.as_str() {
            "beginning" | "earliest" => bound(p, "earliest"),
            "end" | "latest" => bound(p, "latest"),
            other => match other.parse::<u64>() {
                Ok(o) if other.len() < 12 => o,
                _ => {
                    let ms = parse_time_ms(other).with_context(|| {
                        format!("--from must be beginning, end, an offset, or a time such as 2026-11-23T10:00:00Z; got {other:?}")
                    })?;
                    client.offset_for_time(&args.topic, p, ms).await?
                }
            },
        };
        start.push((p, offset, bound(p, "latest")));
    }
    Ok(start)
}

/// Reads one partition from `offset`: up to `end` (the latest offset when `consume`
/// started), or on and on with `--follow`.
struct Reader {
    client: Client,
    topic: String,
    partition: u32,
    offset: u64,
    end: u64,
    follow: bool,
}

impl Reader {
    /// Sends each batch of records read to `tx`, then stops at the end, on an error (sent
    /// too), or when no one receives any more.
    async fn run(mut self, tx: tokio::sync::mpsc::Sender<anyhow::Result<(u32, Vec<RecordOut>)>>) {
        let (p, end, follow) = (self.partition, self.end, self.follow);
        loop {
            if !follow && self.offset >= end {
                return;
            }
            let wait = if follow {
                Duration::from_millis(10_000)
            } else {
                Duration::ZERO
            };
            match self
                .client
                .read(&self.topic, p, Some(self.offset), 500, wait)
                .await
            {
                Ok(r) => {
                    self.offset = r.next_offset;
                    let done = !follow && (r.records.is_empty() || self.offset >= end);
                    let records: Vec<RecordOut> = r
                        .records
                        .into_iter()
                        .filter(|x| follow || x.offset < end)
                        .collect();
                    if !records.is_empty() && tx.send(Ok((p, records))).await.is_err() {
                        return;
                    }
                    if done {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            }
        }
    }
}
