//! Human output: aligned tables. `--json` bypasses this entirely.

use std::io::{self, Write};

pub fn table(headers: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let mut out = io::stdout().lock();
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    writeln!(
        out,
        "{}",
        line(headers.iter().map(|h| h.to_string()).collect())
    )?;
    for r in rows {
        writeln!(out, "{}", line(r.clone()))?;
    }
    Ok(())
}

/// One `name  value` line per pair, the values aligned.
pub fn pairs(pairs: &[(String, String)]) -> io::Result<()> {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = io::stdout().lock();
    for (k, v) in pairs {
        writeln!(out, "{k:<width$}  {v}")?;
    }
    Ok(())
}

pub fn json(v: &serde_json::Value) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_default()
    )
}

pub fn line(s: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{s}")
}

/// The server's answer `v`: as JSON with `--json`, else as `text` prints it.
pub fn answer(
    json_out: bool,
    v: &serde_json::Value,
    text: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if json_out {
        Ok(json(v)?)
    } else {
        text()
    }
}

/// The server's answer `v`: as JSON with `--json`, else as the one line `text` makes.
pub fn answer_line(
    json_out: bool,
    v: &serde_json::Value,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    answer(json_out, v, || Ok(line(&text())?))
}

/// Milliseconds since 1970 as an RFC 3339 UTC time with milliseconds, e.g.
/// `2026-11-23T10:00:00.000Z`.
pub fn rfc3339_ms(ms: u64) -> String {
    ferry_broker::time::rfc3339(ms.min(i64::MAX as u64) as i64)
}

#[cfg(test)]
mod tests {
    use super::rfc3339_ms;

    #[test]
    fn times_print_as_rfc3339() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_795_428_000_123), "2026-11-23T10:00:00.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
    }
}
