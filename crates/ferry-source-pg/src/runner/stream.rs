//! Streaming: replication events in, records out in batches, the slot confirmed only
//! past what is durable; and the positions a restart starts from.

use super::*;
use futures_util::FutureExt;

impl Capture {
    /// Finds the last position of this source in each partition of its topics.
    pub(super) async fn recover(&mut self) -> Result<(), Error> {
        // A write of an earlier session may still be syncing: read after it.
        let _no_write = self.write_lock.clone().lock_owned().await;
        for topic in self.topics.clone() {
            let Ok(t) = self.broker.topic(&topic) else {
                continue;
            };
            for p in 0..t.partitions().len() as u32 {
                let (earliest, latest) = self.broker.bounds(&topic, p)?;
                if let Some(pos) = self.last_position(&topic, p, earliest, latest).await? {
                    self.written.insert((topic.clone(), p), pos);
                }
            }
        }
        Ok(())
    }

    /// The position of this source's last record in a partition, looking back at most
    /// `RECOVERY_SCAN_RECORDS` from its end, in windows of 500 read forwards whole (a
    /// read may stop early at its byte limit: it goes on from where it stopped).
    async fn last_position(
        &self,
        topic: &str,
        p: u32,
        earliest: u64,
        latest: u64,
    ) -> Result<Option<Position>, Error> {
        let floor = latest.saturating_sub(RECOVERY_SCAN_RECORDS).max(earliest);
        let mut end = latest;
        while end > floor {
            let from = end.saturating_sub(500).max(floor);
            let mut found = None;
            let mut at = from;
            while at < end {
                let read = self
                    .broker
                    .read(topic, p, at, (end - at) as usize, 16 << 20, Duration::ZERO)
                    .await?;
                for r in &read.records {
                    if r.offset as u64 >= end {
                        break;
                    }
                    let ours = r.header(envelope::SOURCE_HEADER) == Some(self.spec.name.as_bytes());
                    let pos = r
                        .header(envelope::POSITION_HEADER)
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .and_then(Position::parse);
                    if let (true, Some(pos)) = (ours, pos) {
                        found = Some(pos);
                    }
                }
                if read.next_offset <= at {
                    break;
                }
                at = read.next_offset;
            }
            if found.is_some() {
                return Ok(found);
            }
            end = from;
        }
        Ok(None)
    }

    /// Streams changes until the connection fails.
    pub(super) async fn stream(&mut self, client: &mut ReplicationClient) -> Result<(), Error> {
        let limits = pgoutput::Limits::default();
        let mut tick = tokio::time::interval(PROBE_EVERY);
        let wake = self.wake.clone();
        self.streaming_since_ms = ferry_broker::broker::now_ms() as i64;
        sql_deadline(self.next_chunk()).await?;
        // An event already received while deciding whether to write the batch.
        let mut ready = None;
        loop {
            let deadline = self.batch.since.map(|s| s + LINGER);
            let event = if let Some(ev) = ready.take() {
                ev
            } else {
                // Housekeeping first: under a steady stream `recv` is always ready and
                // would starve the probe, backfills and the end of writes.
                tokio::select! {
                    biased;
                    _ = tick.tick() => {
                        self.refresh_slot_status().await?;
                        continue;
                    }
                    done = write_done(&mut self.in_flight) => {
                        if let Some(w) = self.in_flight.take() {
                            self.settled(w, done, Some(client))?;
                        }
                        continue;
                    }
                    read = chunk_answer(&mut self.chunk_rx) => {
                        self.chunk_read(read);
                        sql_deadline(self.next_chunk()).await?;
                        continue;
                    }
                    _ = wake.notified() => {
                        sql_deadline(self.next_chunk()).await?;
                        continue;
                    }
                    ev = client.recv() => ev?,
                    _ = sleep_until(deadline) => {
                        self.write_batch(Some(client)).await?;
                        continue;
                    }
                }
            };
            let Some(event) = event else {
                return Ok(());
            };
            match event {
                ReplicationEvent::Begin {
                    final_lsn,
                    xid,
                    commit_time_micros,
                } => {
                    self.txn = Some(Txn {
                        commit_lsn: u64::from(final_lsn),
                        xid,
                        commit_ms: envelope::pg_time_to_unix_ms(commit_time_micros),
                    });
                }
                ReplicationEvent::XLogData {
                    wal_start, data, ..
                } => {
                    self.at_change(u64::from(wal_start));
                    let message = pgoutput::decode(&data, &limits)
                        .map_err(|e| anyhow::anyhow!("pgoutput message: {e}"))?;
                    sql_deadline(self.change(message)).await?;
                }
                ReplicationEvent::Message {
                    transactional: true,
                    lsn,
                    prefix,
                    content,
                } => {
                    self.at_change(u64::from(lsn));
                    if prefix == backfill::WATERMARK_PREFIX {
                        self.watermark(&content, client).await?;
                    } else {
                        self.message(&prefix, content);
                    }
                }
                ReplicationEvent::Message { .. } => {}
                ReplicationEvent::Commit {
                    end_lsn,
                    commit_time_micros,
                    ..
                } => {
                    self.txn = None;
                    self.commit_end = Some(u64::from(end_lsn));
                    self.last_commit_ms = envelope::pg_time_to_unix_ms(commit_time_micros);
                    self.commit_unreported = true;
                    set(&self.status, |s| s.transactions += 1);
                    if self.batch.records == 0 {
                        // Nothing of this transaction is waiting: confirm it once what
                        // is in flight is durable (or now).
                        self.write_batch(Some(client)).await?;
                    }
                }
                ReplicationEvent::KeepAlive { wal_end, .. } => {
                    if self.txn.is_none() && self.batch.records == 0 {
                        // Everything sent before this is durable: let the slot move
                        // on an idle database too.
                        let end = u64::from(wal_end);
                        if self.commit_end.is_none_or(|c| end > c) {
                            self.commit_end = Some(end);
                        }
                        self.write_batch(Some(client)).await?;
                    }
                }
                ReplicationEvent::StoppedAt { .. } => return Ok(()),
            }
            if self.batch.records == 0 {
                continue;
            }
            // Write the batch when it is full, when its first record has waited
            // LINGER, or as soon as no further event is waiting: records share a
            // write (and its sync) only with what has already arrived.
            let lingered = self.batch.since.is_some_and(|s| s.elapsed() >= LINGER);
            if !self.batch.full() && !lingered {
                if let Some(ev) = client.recv().now_or_never() {
                    ready = Some(ev?);
                    continue;
                }
            }
            self.write_batch(Some(client)).await?;
        }
    }

    /// Writes the batch and waits until it is durable, confirming to Postgres what is.
    pub(super) async fn flush_and_confirm(
        &mut self,
        client: &ReplicationClient,
    ) -> Result<(), Error> {
        self.write_batch(Some(client)).await?;
        self.settle(Some(client)).await
    }

    /// Starts writing the batch once the write before it is durable, and goes on: the
    /// next batch is gathered while this one syncs. What the batch covers is confirmed
    /// to Postgres when it is durable (by the next `settle`).
    pub(super) async fn write_batch(
        &mut self,
        client: Option<&ReplicationClient>,
    ) -> Result<(), Error> {
        // The commit the batch completes, if it ends on a commit boundary.
        let confirm = if self.txn.is_none() {
            self.commit_end
        } else {
            None
        };
        let commit = if confirm.is_some() {
            std::mem::take(&mut self.commit_unreported)
                .then_some(self.last_commit_ms)
                .filter(|c| *c > 0)
        } else {
            None
        };
        if self.batch.records == 0 {
            // Nothing to write: confirm once what is in flight is durable, or now.
            match self.in_flight.as_mut() {
                Some(w) => {
                    if confirm.is_some() {
                        w.confirm = confirm;
                        w.commit = commit.or(w.commit);
                    }
                }
                None => {
                    if let (Some(c), Some(end)) = (client, confirm) {
                        self.confirm(c, end, commit);
                    }
                }
            }
            return Ok(());
        }
        self.settle(client).await?;
        let batch = std::mem::take(&mut self.batch);
        let mut writes = Vec::new();
        let mut count = 0u64;
        for (topic, records) in batch.by_topic {
            let partitions = match self.ensure_topic(&topic).await {
                Ok(n) => n,
                Err(BrokerError::InvalidTopicName { name, reason }) => {
                    self.skip(
                        records.len() as u64,
                        &format!(
                            "{} records for topic '{name}', whose name is invalid: {reason}",
                            records.len()
                        ),
                    );
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let mut out = Vec::with_capacity(records.len());
            for (pos, mut r) in records {
                let p = r
                    .key
                    .as_ref()
                    .map_or(0, |k| partition_for_key(k, partitions));
                if pos.lsn != 0 {
                    if let Some(last) = self.written.get(&(topic.clone(), p)) {
                        if pos <= *last {
                            continue;
                        }
                    }
                }
                r.partition = Some(p);
                out.push(r);
            }
            if out.is_empty() {
                continue;
            }
            count += out.len() as u64;
            let broker = self.broker.clone();
            writes.push(async move {
                let r = broker.produce(&topic, out).await;
                (topic, r)
            });
        }
        // Held until the write is durable: a session that starts after this one ended
        // reads its partitions' last positions only then.
        let guard = self.write_lock.clone().lock_owned().await;
        let handle = tokio::spawn(async move {
            let _guard = guard;
            for (topic, r) in futures_util::future::join_all(writes).await {
                r.map_err(|e| anyhow::anyhow!("writing to topic '{topic}': {e}"))?;
            }
            Ok(count)
        });
        self.in_flight = Some(InFlight {
            handle,
            confirm,
            commit,
        });
        Ok(())
    }

    /// Waits for the write in flight to be durable and confirms what it covered.
    pub(super) async fn settle(&mut self, client: Option<&ReplicationClient>) -> Result<(), Error> {
        let Some(mut w) = self.in_flight.take() else {
            return Ok(());
        };
        let done = (&mut w.handle).await;
        self.settled(w, done, client)
    }

    /// A write in flight ended (`done`): counts it and confirms what it covered.
    fn settled(
        &mut self,
        w: InFlight,
        done: Result<Result<u64, Error>, tokio::task::JoinError>,
        client: Option<&ReplicationClient>,
    ) -> Result<(), Error> {
        let written = done.map_err(|e| anyhow::anyhow!("the write task failed: {e}"))??;
        set(&self.status, |s| s.records += written);
        if let (Some(c), Some(end)) = (client, w.confirm) {
            self.confirm(c, end, w.commit);
        }
        Ok(())
    }

    /// Lets the slot move to `end`: everything before it is durable in Ferry.
    fn confirm(&mut self, client: &ReplicationClient, end: u64, commit: Option<i64>) {
        client.update_applied_lsn(Lsn::from(end));
        let lag = commit.map(|c| (ferry_broker::broker::now_ms() as i64 - c).max(0) as u64);
        set(&self.status, |s| {
            s.position = Some(envelope::lsn_text(end));
            if commit.is_some() {
                s.last_commit_ms = commit;
                s.capture_lag_ms = lag;
            }
        });
    }

    /// Reads the slot's lag and the WAL it holds; also the source's check that Postgres
    /// still answers. A replication connection whose network is cut may stay silent
    /// forever (no error, no data): after `PROBES_MISSED_MAX` probes unanswered within
    /// `PROBE_TIMEOUT`, or a slot no longer held, the session ends and reconnects.
    pub(super) async fn refresh_slot_status(&mut self) -> Result<(), Error> {
        let slot = self.spec.slot();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&slot];
        let query = self.sql.query_opt(
            "SELECT (pg_current_wal_lsn() - restart_lsn)::int8, \
             (pg_current_wal_lsn() - confirmed_flush_lsn)::int8, active \
             FROM pg_replication_slots WHERE slot_name = $1",
            &params,
        );
        let row = match tokio::time::timeout(PROBE_TIMEOUT, query).await {
            Ok(r) => {
                self.probes_missed = 0;
                r?
            }
            Err(_) => {
                self.probes_missed += 1;
                if self.probes_missed >= PROBES_MISSED_MAX {
                    anyhow::bail!(
                        "Postgres has not answered for {} s; connecting again",
                        (PROBE_TIMEOUT * PROBES_MISSED_MAX).as_secs()
                    );
                }
                return Ok(());
            }
        };
        let Some(row) = row else {
            anyhow::bail!("slot '{}' no longer exists", self.spec.slot());
        };
        let active: bool = row.get(2);
        if !active {
            anyhow::bail!(
                "slot '{}' is no longer held by this source's connection",
                self.spec.slot()
            );
        }
        let held: Option<i64> = row.get(0);
        let lag: Option<i64> = row.get(1);
        let max = self.spec.max_slot_wal_bytes;
        let name = self.spec.name.clone();
        let now = ferry_broker::broker::now_ms() as i64;
        let started_ms = self.streaming_since_ms;
        set(&self.status, |s| {
            s.slot_wal_bytes = held.map(|h| h.max(0) as u64);
            s.lag_bytes = lag.map(|l| l.max(0) as u64);
            // Behind: since the newest commit captured, or, before the first one, since
            // the stream started.
            let since = s.last_commit_ms.unwrap_or(started_ms);
            s.lag_ms = match s.lag_bytes {
                Some(0) => Some(0),
                Some(_) => Some((now - since).max(0) as u64),
                None => None,
            };
            let over = s.slot_wal_bytes.is_some_and(|h| h > max);
            if over && !s.slot_wal_warning {
                tracing::warn!(source = %name, held = ?s.slot_wal_bytes, limit = max,
                    "the source's slot holds more WAL than max_slot_wal_bytes");
            }
            s.slot_wal_warning = over;
        });
        Ok(())
    }

    pub(super) fn next_pos(&mut self) -> (Txn, Position) {
        let txn = self.txn.unwrap_or(Txn {
            commit_lsn: 0,
            xid: 0,
            commit_ms: ferry_broker::broker::now_ms() as i64,
        });
        let pos = Position {
            lsn: txn.commit_lsn,
            change: self.change_lsn,
            sub: self.sub,
        };
        self.sub = self.sub.wrapping_add(1);
        (txn, pos)
    }

    /// The records made next come from the change (or message) at `lsn`.
    pub(super) fn at_change(&mut self, lsn: u64) {
        self.change_lsn = lsn;
        self.sub = 0;
    }

    /// Writes what the batch holds, leaving out what a partition holds already, and
    /// waits until it is durable (the snapshot's writes: nothing to confirm).
    pub(super) async fn flush(&mut self) -> Result<(), Error> {
        self.write_batch(None).await?;
        self.settle(None).await
    }

    /// The topic's partition count, making the topic when it is missing.
    pub(super) async fn ensure_topic(&mut self, topic: &str) -> Result<u32, BrokerError> {
        let t = match self.broker.topic(topic) {
            Ok(t) => t,
            Err(BrokerError::TopicNotFound(_)) => {
                let settings = ferry_broker::broker::TopicSettings {
                    partitions: self.spec.topic_partitions,
                    ..Default::default()
                };
                match self.broker.create_topic(topic, settings).await {
                    Ok(_) | Err(BrokerError::TopicExists(_)) => {}
                    Err(e) => return Err(e),
                }
                self.broker.topic(topic)?
            }
            Err(e) => return Err(e),
        };
        if !self.topics.contains(topic) {
            self.topics.insert(topic.to_string());
            let name = self.spec.name.clone();
            let topic = topic.to_string();
            self.sources.update_stored(&name, move |s| {
                s.topics.insert(topic);
            });
        }
        Ok(t.partitions().len() as u32)
    }
}

/// The answer of the backfill chunk's reading task, or never without one.
async fn chunk_answer(
    rx: &mut Option<tokio::sync::oneshot::Receiver<backfill::ChunkRead>>,
) -> Result<backfill::ChunkRead, tokio::sync::oneshot::error::RecvError> {
    match rx {
        Some(rx) => rx.await,
        None => std::future::pending().await,
    }
}

/// The end of the write in flight, or never without one.
async fn write_done(
    w: &mut Option<InFlight>,
) -> Result<Result<u64, Error>, tokio::task::JoinError> {
    match w {
        Some(w) => (&mut w.handle).await,
        None => std::future::pending().await,
    }
}

/// Runs work that may wait on the SQL connection, which a silent network would leave
/// waiting forever: past `SQL_TIMEOUT` the session ends and connects again.
async fn sql_deadline<T>(
    work: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(SQL_TIMEOUT, work).await.map_err(|_| {
        anyhow::anyhow!("Postgres did not answer within {SQL_TIMEOUT:?}; connecting again")
    })?
}
