//! The peer comparison as Markdown: the systems and their durability, every figure, and
//! Ferry's figure against each peer's.

use super::{Latency, PeersReport, SystemResult};

/// Today's date (UTC) as YYYY-MM-DD.
pub fn today() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    ferry_broker::time::rfc3339(ms).chars().take(10).collect()
}

/// 1234567.8 → "1,234,568"
pub fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn rate_cell(x: &Result<f64, String>, disk_mb_s: f64) -> String {
    match x {
        Ok(r) => format!(
            "{} ({:.0} %)",
            thousands(*r),
            100.0 * r * super::RECORD_BYTES as f64 / 1e6 / disk_mb_s
        ),
        Err(e) => format!("failed: {}", short(e)),
    }
}

fn short(e: &str) -> String {
    let e = e.replace('|', "/").replace('\n', " ");
    if e.chars().count() > 80 {
        format!("{}…", e.chars().take(80).collect::<String>())
    } else {
        e
    }
}

fn find<T: Clone>(v: &[(usize, Result<T, String>)], n: usize) -> Option<Result<T, String>> {
    v.iter().find(|(k, _)| *k == n).map(|(_, x)| x.clone())
}

/// A row of the results table: one figure per system.
struct Row {
    label: String,
    /// The label in the comparison table (None: not compared).
    compare: Option<String>,
    /// Per system: the cell's text and, for comparisons, its number.
    cells: Vec<(String, Option<f64>)>,
    /// Whether a higher number is better.
    higher_better: bool,
}

/// One row per workload and figure. Longer than most functions on purpose: it is the
/// table of rows, one entry each.
fn rows(rep: &PeersReport) -> Vec<Row> {
    let disk = rep.disk.seq_mb_s;
    let res = &rep.results;
    let skipped = |r: &SystemResult| r.skipped.as_ref().map(|s| format!("not run: {}", short(s)));
    let mut out = Vec::new();
    for &n in &rep.options.producers {
        let who = format!("{n} producer{}", if n == 1 { "" } else { "s" });
        out.push(Row {
            label: format!("durable produce, {who} (records/s, % of disk bandwidth)"),
            compare: Some(format!("durable produce, {who}")),
            cells: res
                .iter()
                .map(|r| match (skipped(r), find(&r.produce, n)) {
                    (Some(s), _) => (s, None),
                    (None, Some(x)) => (rate_cell(&x, disk), x.ok()),
                    (None, None) => ("—".into(), None),
                })
                .collect(),
            higher_better: true,
        });
    }
    let o = &rep.options;
    out.push(Row {
        label: format!(
            "single-record produce, {} publishers × {} in flight (records/s)",
            o.single_publishers, o.window
        ),
        compare: Some("single-record produce".into()),
        cells: res
            .iter()
            .map(|r| match (skipped(r), &r.single) {
                (Some(s), _) => (s, None),
                (None, Some(Ok(x))) => (thousands(*x), Some(*x)),
                (None, Some(Err(e))) => (format!("failed: {}", short(e)), None),
                (None, None) => ("—".into(), None),
            })
            .collect(),
        higher_better: true,
    });
    let lat = |which: fn(&SystemResult) -> &Option<Result<Latency, String>>,
               f: fn(&Latency) -> String,
               g: fn(&Latency) -> f64|
     -> Vec<(String, Option<f64>)> {
        res.iter()
            .map(|r| match (skipped(r), which(r)) {
                (Some(s), _) => (s, None),
                (None, Some(Ok(l))) => (f(l), Some(g(l))),
                (None, Some(Err(e))) => (format!("failed: {}", short(e)), None),
                (None, None) => ("—".into(), None),
            })
            .collect()
    };
    out.push(Row {
        label: "end-to-end latency: rate (records/s; half of 1 producer's), received of sent"
            .into(),
        compare: None,
        cells: lat(
            |r| &r.latency,
            |l| format!("{}; {} of {}", thousands(l.rate), l.received, l.sent),
            |l| l.rate,
        ),
        higher_better: true,
    });
    out.push(Row {
        label: "end-to-end latency p50 / p99 / p99.9 (ms)".into(),
        compare: Some("end-to-end latency, p99".into()),
        cells: lat(
            |r| &r.latency,
            |l| format!("{:.2} / {:.2} / {:.2}", l.p50_ms, l.p99_ms, l.p999_ms),
            |l| l.p99_ms,
        ),
        higher_better: false,
    });
    out.push(Row {
        label: format!(
            "single-record latency at {} records/s, up to {} in flight: p50 / p99 / p99.9 (ms); received of sent",
            thousands(o.single_rate),
            o.window
        ),
        compare: Some("single-record latency, p99".into()),
        cells: lat(
            |r| &r.single_latency,
            |l| {
                format!(
                    "{:.2} / {:.2} / {:.2}; {} of {}",
                    l.p50_ms, l.p99_ms, l.p999_ms, l.received, l.sent
                )
            },
            |l| l.p99_ms,
        ),
        higher_better: false,
    });
    for &n in &rep.options.consumers {
        let who = format!("{n} consumer{}", if n == 1 { "" } else { "s" });
        out.push(Row {
            label: format!("consume and ack, {who} (records/s)"),
            compare: Some(format!("consume and ack, {who}")),
            cells: res
                .iter()
                .map(|r| match (skipped(r), find(&r.consume, n)) {
                    (Some(s), _) => (s, None),
                    (None, Some(Ok(x))) => (thousands(x), Some(x)),
                    (None, Some(Err(e))) => (format!("failed: {}", short(&e)), None),
                    (None, None) => ("—".into(), None),
                })
                .collect(),
            higher_better: true,
        });
    }
    if rep.options.backlog_records > 0 {
        let b = |f: fn(&super::Backlog) -> (String, f64)| -> Vec<(String, Option<f64>)> {
            res.iter()
                .map(|r| match (skipped(r), &r.backlog) {
                    (Some(s), _) => (s, None),
                    (None, Some(Ok(b))) => {
                        let (t, x) = f(b);
                        (t, Some(x))
                    }
                    (None, Some(Err(e))) => (format!("failed: {}", short(e)), None),
                    (None, None) => ("—".into(), None),
                })
                .collect()
        };
        let n = thousands(rep.options.backlog_records as f64);
        out.push(Row {
            label: format!("backlog of {n}: publish (records/s)"),
            compare: Some("backlog: publish".into()),
            cells: b(|b| (thousands(b.publish_per_s), b.publish_per_s)),
            higher_better: true,
        });
        out.push(Row {
            label: format!("backlog of {n}: peak memory (MiB, PSS of its processes; idle → peak)"),
            compare: Some("backlog: peak memory".into()),
            cells: b(|b| {
                (
                    format!("{:.0} → **{:.0}**", b.idle_mib, b.peak_mib),
                    b.peak_mib,
                )
            }),
            higher_better: false,
        });
        out.push(Row {
            label: format!("backlog of {n}: drain with 4 consumers (s)"),
            compare: Some("backlog: drain time".into()),
            cells: b(|b| (format!("{:.1}", b.drain_secs), b.drain_secs)),
            higher_better: false,
        });
    }
    out
}

/// The whole comparison in Markdown. Longer than most functions on purpose: the page
/// reads top to bottom as it is written.
pub fn markdown(rep: &PeersReport) -> String {
    let res = &rep.results;
    let mut s = String::new();
    s.push_str(&format!(
        "Run of {}: `ferry-bench peers`, {} s per produce run, {} s of latency, {} records per consume run, \
         a backlog of {} records. Records of 1 KiB. The disk in the same run: **{:.0} MB/s** sequential \
         write, **{:.0} fdatasync/s**.\n\n",
        rep.date,
        rep.options.seconds,
        rep.options.latency_seconds,
        thousands(rep.options.consume_records as f64),
        thousands(rep.options.backlog_records as f64),
        rep.disk.seq_mb_s,
        rep.disk.fsyncs_per_s
    ));
    s.push_str("| system | version | client | what an acknowledged write means here |\n|---|---|---|---|\n");
    for r in res {
        s.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            r.system.id(),
            short(&r.version),
            r.system.client(),
            r.system.durability()
        ));
    }
    s.push('\n');
    let rows = rows(rep);
    s.push_str("| workload |");
    for r in res {
        s.push_str(&format!(" {} |", r.system.id()));
    }
    s.push_str("\n|---|");
    s.push_str(&"---|".repeat(res.len()));
    s.push('\n');
    for row in &rows {
        s.push_str(&format!("| {} |", row.label));
        for (text, _) in &row.cells {
            s.push_str(&format!(" {text} |"));
        }
        s.push('\n');
    }
    s.push('\n');
    // Ferry's better front end against each peer.
    let ferry: Vec<usize> = (0..res.len())
        .filter(|&i| res[i].system.is_ferry())
        .collect();
    let peers: Vec<usize> = (0..res.len())
        .filter(|&i| !res[i].system.is_ferry())
        .collect();
    if !ferry.is_empty() && !peers.is_empty() {
        s.push_str(
            "Ferry against each peer: Ferry's better front end's figure over the peer's for \
             rates, the peer's over Ferry's for latency (p99), memory and drain time, so above 1× \
             means Ferry is ahead.\n\n| workload |",
        );
        for &i in &peers {
            let note = if res[i].system.is_durable() {
                ""
            } else {
                " (not durable)"
            };
            s.push_str(&format!(" {}{note} |", res[i].system.id()));
        }
        s.push_str("\n|---|");
        s.push_str(&"---|".repeat(peers.len()));
        s.push('\n');
        for row in &rows {
            let Some(label) = &row.compare else { continue };
            let best = ferry
                .iter()
                .filter_map(|&i| row.cells[i].1.map(|x| (i, x)))
                .reduce(|a, b| {
                    let better = if row.higher_better {
                        b.1 > a.1
                    } else {
                        b.1 < a.1
                    };
                    if better {
                        b
                    } else {
                        a
                    }
                });
            s.push_str(&format!("| {label} |"));
            for &p in &peers {
                let cell = match (best, row.cells[p].1) {
                    (Some((fi, f)), Some(x)) if f > 0.0 && x > 0.0 => {
                        let ratio = if row.higher_better { f / x } else { x / f };
                        let via = res[fi].system.id().trim_start_matches("ferry-");
                        format!("{ratio:.2}× ({via})")
                    }
                    _ => "—".into(),
                };
                s.push_str(&format!(" {cell} |"));
            }
            s.push('\n');
        }
        s.push('\n');
    }
    s
}

/// One line per system for the progress output.
pub fn one_line(r: &SystemResult) -> String {
    if let Some(why) = &r.skipped {
        if r.produce.is_empty() {
            return format!("{}: not run: {why}", r.system.id());
        }
    }
    let rate = |x: &Result<f64, String>| match x {
        Ok(v) => thousands(*v),
        Err(e) => format!("failed ({})", short(e)),
    };
    let mut s = format!("{}:", r.system.id());
    for (n, x) in &r.produce {
        s.push_str(&format!(" produce×{n} {}/s;", rate(x)));
    }
    match &r.latency {
        Some(Ok(l)) => s.push_str(&format!(
            " latency p50/p99/p99.9 {:.2}/{:.2}/{:.2} ms at {}/s;",
            l.p50_ms,
            l.p99_ms,
            l.p999_ms,
            thousands(l.rate)
        )),
        Some(Err(e)) => s.push_str(&format!(" latency failed ({});", short(e))),
        None => {}
    }
    if let Some(x) = &r.single {
        s.push_str(&format!(" single-record {}/s;", rate(x)));
    }
    match &r.single_latency {
        Some(Ok(l)) => s.push_str(&format!(
            " single-record latency p50/p99 {:.2}/{:.2} ms at {}/s;",
            l.p50_ms,
            l.p99_ms,
            thousands(l.rate)
        )),
        Some(Err(e)) => s.push_str(&format!(" single-record latency failed ({});", short(e))),
        None => {}
    }
    for (n, x) in &r.consume {
        s.push_str(&format!(" consume×{n} {}/s;", rate(x)));
    }
    match &r.backlog {
        Some(Ok(b)) => s.push_str(&format!(
            " backlog peak memory {:.0} MiB, drained in {:.1} s",
            b.peak_mib, b.drain_secs
        )),
        Some(Err(e)) => s.push_str(&format!(" backlog failed ({})", short(e))),
        None => {}
    }
    if let Some(why) = &r.skipped {
        s.push_str(&format!(" (stopped: {})", short(why)));
    }
    s
}

/// Replaces the text between `<!-- peers:begin -->` and `<!-- peers:end -->` in `doc`.
pub fn update_doc(doc: &std::path::Path, body: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(doc)?;
    let (begin, end) = ("<!-- peers:begin -->", "<!-- peers:end -->");
    let (Some(a), Some(b)) = (text.find(begin), text.find(end)) else {
        anyhow::bail!(
            "{} has no {begin} … {end} section to replace",
            doc.display()
        );
    };
    anyhow::ensure!(a < b, "{}: {end} comes before {begin}", doc.display());
    let new = format!("{}{begin}\n{body}\n{}", &text[..a], &text[b..]);
    std::fs::write(doc, new)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1234567.8), "1,234,568");
    }

    #[test]
    fn today_is_a_date() {
        let d = today();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"));
    }

    #[test]
    fn update_doc_replaces_only_the_section() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.md");
        std::fs::write(&p, "a\n<!-- peers:begin -->\nold\n<!-- peers:end -->\nz\n").unwrap();
        update_doc(&p, "new").unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "a\n<!-- peers:begin -->\nnew\n<!-- peers:end -->\nz\n"
        );
        std::fs::write(&p, "no markers").unwrap();
        assert!(update_doc(&p, "new").is_err());
    }
}
