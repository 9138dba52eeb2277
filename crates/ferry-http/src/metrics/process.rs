//! The process's own numbers (memory, files, CPU, threads, start time) and Ferry's
//! version, read from `/proc` when `/metrics` is scraped.

use super::snapshot::{family, Labels};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// The process's own numbers, under the names Prometheus's client libraries use.
#[derive(Debug)]
pub(super) struct Process {
    pub(super) started: std::time::SystemTime,
}

/// Fields of `/proc/self/stat` after the command name: (user ticks, system ticks,
/// threads).
fn proc_stat() -> Option<(u64, u64, i64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime 15, threads 20.
    let utime = fields.get(11)?.parse().ok()?;
    let stime = fields.get(12)?.parse().ok()?;
    let threads = fields.get(17)?.parse().ok()?;
    Some((utime, stime, threads))
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf reads a system setting and has no memory effects.
    let v = unsafe { libc::sysconf(name) };
    (v > 0).then_some(v as u64)
}

impl Collector for Process {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let one = |v: f64| vec![(Labels::new(), ConstGauge::new(v))];
        if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
            let mut f = statm.split_whitespace().map(|x| x.parse::<u64>().ok());
            let page = sysconf(libc::_SC_PAGESIZE).unwrap_or(4096);
            if let (Some(Some(virt)), Some(Some(rss))) = (f.next(), f.next()) {
                family(
                    &mut e,
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes",
                    MetricType::Gauge,
                    one((rss * page) as f64),
                )?;
                family(
                    &mut e,
                    "process_virtual_memory_bytes",
                    "Virtual memory size in bytes",
                    MetricType::Gauge,
                    one((virt * page) as f64),
                )?;
            }
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            family(
                &mut e,
                "process_open_fds",
                "Open file descriptors",
                MetricType::Gauge,
                one(fds.count() as f64),
            )?;
        }
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct it is given, which lives here.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            family(
                &mut e,
                "process_max_fds",
                "Most file descriptors the process may open",
                MetricType::Gauge,
                one(limit.rlim_cur as f64),
            )?;
        }
        if let Some((utime, stime, threads)) = proc_stat() {
            let ticks = sysconf(libc::_SC_CLK_TCK).unwrap_or(100) as f64;
            family(
                &mut e,
                "process_cpu_seconds",
                "User and system CPU time spent in seconds",
                MetricType::Counter,
                vec![(
                    Labels::new(),
                    ConstCounter::new((utime + stime) as f64 / ticks),
                )],
            )?;
            family(
                &mut e,
                "process_threads",
                "Threads of the process",
                MetricType::Gauge,
                one(threads as f64),
            )?;
        }
        let start = self
            .started
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        family(
            &mut e,
            "process_start_time_seconds",
            "When Ferry started serving, in seconds since the Unix epoch",
            MetricType::Gauge,
            one(start),
        )?;
        family(
            &mut e,
            "ferry_build_info",
            "Ferry's version, as a label of a series whose value is 1",
            MetricType::Gauge,
            vec![(
                vec![("version", env!("CARGO_PKG_VERSION").to_string())],
                ConstGauge::new(1i64),
            )],
        )
    }
}
