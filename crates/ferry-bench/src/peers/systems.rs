//! The systems compared, and how each is started: on loopback, with a fresh data folder,
//! with the durability settings stated next to its figures.

use crate::server::Server;
use crate::Ctx;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    FerryHttp,
    FerryHttp2,
    FerryKafka,
    Nats,
    RabbitQuorum,
    RabbitClassic,
    RedisAlways,
    RedisEverysec,
}

pub const ALL: [System; 8] = [
    System::FerryHttp,
    System::FerryHttp2,
    System::FerryKafka,
    System::Nats,
    System::RabbitQuorum,
    System::RabbitClassic,
    System::RedisAlways,
    System::RedisEverysec,
];

impl System {
    /// The name used on the command line and in the tables.
    pub fn id(self) -> &'static str {
        match self {
            System::FerryHttp => "ferry-http",
            System::FerryHttp2 => "ferry-http2",
            System::FerryKafka => "ferry-kafka",
            System::Nats => "nats",
            System::RabbitQuorum => "rabbitmq-quorum",
            System::RabbitClassic => "rabbitmq-classic",
            System::RedisAlways => "redis-always",
            System::RedisEverysec => "redis-everysec",
        }
    }

    pub fn parse(s: &str) -> Option<System> {
        ALL.into_iter().find(|x| x.id() == s)
    }

    /// Whether an acknowledged write is on disk, as configured here.
    pub fn is_durable(self) -> bool {
        self != System::RedisEverysec
    }

    pub fn is_ferry(self) -> bool {
        matches!(
            self,
            System::FerryHttp | System::FerryHttp2 | System::FerryKafka
        )
    }

    /// What an acknowledged write means on this system, as configured here.
    pub fn durability(self) -> &'static str {
        match self {
            System::FerryHttp | System::FerryHttp2 | System::FerryKafka => {
                "topic durability `always`: the batch is fdatasync'ed (group commit) before the produce is answered; acks are fsynced too"
            }
            System::Nats => {
                "JetStream file storage with `sync_interval: always`: every write is fsynced before the publish ack"
            }
            System::RabbitQuorum => {
                "quorum queue (single node): the Raft log is fsynced before the publisher confirm"
            }
            System::RabbitClassic => {
                "classic durable queue, persistent messages: confirmed once the message store has fsynced them"
            }
            System::RedisAlways => {
                "AOF with `appendfsync always`: the AOF is fsynced before replies are sent"
            }
            System::RedisEverysec => {
                "AOF with `appendfsync everysec`: NOT durable per write, up to about a second can be lost (shown for comparison)"
            }
        }
    }

    /// The client library the adapter uses.
    pub fn client(self) -> &'static str {
        match self {
            System::FerryHttp => "HTTP/JSON (reqwest)",
            System::FerryHttp2 => {
                "HTTP/JSON over HTTP/2 cleartext (reqwest), one connection per producer or consumer"
            }
            System::FerryKafka => "librdkafka (rdkafka)",
            System::Nats => "async-nats",
            System::RabbitQuorum | System::RabbitClassic => "lapin (AMQP 0-9-1)",
            System::RedisAlways | System::RedisEverysec => "redis-rs",
        }
    }

    /// The command that must be installed, or None for Ferry.
    fn program(self) -> Option<&'static str> {
        match self {
            System::FerryHttp | System::FerryHttp2 | System::FerryKafka => None,
            System::Nats => Some("nats-server"),
            System::RabbitQuorum | System::RabbitClassic => Some(RABBIT),
            System::RedisAlways | System::RedisEverysec => Some("redis-server"),
        }
    }

    /// None when the system can run here, or why it cannot.
    pub fn missing(self) -> Option<String> {
        let p = self.program()?;
        if find_program(p).is_some() {
            None
        } else {
            Some(format!(
                "{p} is not installed (bench/run-peers.sh installs it)"
            ))
        }
    }
}

const RABBIT: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

fn find_program(p: &str) -> Option<PathBuf> {
    if p.contains('/') {
        return Path::new(p).exists().then(|| PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(p))
            .find(|f| f.is_file())
    })
}

/// The version a system reports, for the table.
pub fn version(system: System, ctx: &Ctx) -> String {
    let out = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout).trim().to_string()
                    + String::from_utf8_lossy(&o.stderr).trim()
            })
            .unwrap_or_default()
    };
    match system {
        System::FerryHttp | System::FerryHttp2 | System::FerryKafka => {
            out(&ctx.ferry_bin.to_string_lossy(), &["--version"])
        }
        System::Nats => out("nats-server", &["--version"]),
        System::RabbitQuorum | System::RabbitClassic => format!(
            "rabbitmq-server {}",
            out("dpkg-query", &["-W", "-f", "${Version}", "rabbitmq-server"])
        ),
        System::RedisAlways | System::RedisEverysec => out("redis-server", &["--version"])
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// A running system: its process and where to reach it.
pub struct Running {
    ferry: Option<Server>,
    other: Option<Child>,
    /// Ferry: the HTTP URL; NATS, RabbitMQ, Redis: the client URL.
    pub url: String,
    /// Ferry: the Kafka listener's host:port.
    pub kafka_addr: String,
    pub dir: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = &mut self.other {
            // The peer was started in its own process group: end the whole group.
            kill_group(c);
        }
        self.ferry.take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Running {
    fn pid(&self) -> u32 {
        match (&self.ferry, &self.other) {
            (Some(s), _) => s.child.id(),
            (_, Some(c)) => c.id(),
            _ => 0,
        }
    }

    /// Memory of the system's process and all its descendants, in MiB: the sum of
    /// their proportional set sizes (PSS), so that pages a forked child shares with its
    /// parent (Redis rewriting its AOF, say) count once, not twice as a sum of RSS would.
    pub fn memory_mib(&self) -> f64 {
        tree_pss_kib(self.pid()) as f64 / 1024.0
    }
}

fn tree_pss_kib(root: u32) -> u64 {
    let mut parents = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // The parent pid is the second field after the command's closing parenthesis.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok())
                .unwrap_or(0);
            parents.push((pid, ppid));
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    let field = |file: &str, name: &str| {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
    };
    tree.iter()
        .map(|pid| {
            field(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
                .or_else(|| field(&format!("/proc/{pid}/status"), "VmRSS:"))
                .unwrap_or(0)
        })
        .sum()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_for_port(port: u16, child: &mut Child, what: &str, dir: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "{what} exited with {status} before listening; see {}",
                dir.join("out.log").display()
            );
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "{what} did not listen on port {port} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ends a peer started in its own process group, and waits for it.
fn kill_group(child: &mut Child) {
    // SAFETY: kill(2) has no memory effects; a stale group id only fails.
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
    }
    let _ = child.wait();
}

/// The last lines a peer printed, for an error that says why it did not start.
fn log_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("out.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// One start of RabbitMQ in `dir` (emptied first): the child and its AMQP URL once it
/// accepts a login, or an error with the end of its output.
async fn start_rabbit(dir: &Path) -> anyhow::Result<(Child, String)> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("mnesia"))?;
    std::fs::create_dir_all(dir.join("log"))?;
    std::fs::write(dir.join("enabled_plugins"), "[].\n")?;
    let port = free_port()?;
    let dist = free_port()?;
    let mut child = spawn(
        Command::new(RABBIT)
            .current_dir(dir)
            .env("RABBITMQ_NODENAME", format!("ferrybench{port}@localhost"))
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", dir.join("pid")),
        dir,
    )?;
    if let Err(e) = wait_for_port(port, &mut child, "rabbitmq-server", dir).await {
        kill_group(&mut child);
        anyhow::bail!("{e:#}\n{}", log_tail(dir));
    }
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    // The port opens a moment before the broker accepts logins.
    let started = Instant::now();
    loop {
        match lapin::Connection::connect(&url, Default::default()).await {
            Ok(c) => {
                let _ = c.close(0, "ready".into()).await;
                return Ok((child, url));
            }
            Err(e) => {
                let exited = child.try_wait().ok().flatten();
                if exited.is_some() || started.elapsed() > Duration::from_secs(60) {
                    kill_group(&mut child);
                    let how = match exited {
                        Some(status) => format!(" (it exited with {status})"),
                        None => String::new(),
                    };
                    anyhow::bail!(
                        "rabbitmq-server did not accept a connection{how}: {e}\n{}",
                        log_tail(dir)
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn spawn(cmd: &mut Command, dir: &Path) -> anyhow::Result<Child> {
    let log = std::fs::File::create(dir.join("out.log"))?;
    Ok(cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()?)
}

/// Starts `system` with a fresh data folder under `dir`. Longer than most functions on
/// purpose: one arm per system, with each one's durability settings in plain view.
pub async fn start(ctx: &Ctx, system: System, dir: &Path) -> anyhow::Result<Running> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let mut run = Running {
        ferry: None,
        other: None,
        url: String::new(),
        kafka_addr: String::new(),
        dir: dir.to_path_buf(),
    };
    match system {
        System::FerryHttp | System::FerryHttp2 | System::FerryKafka => {
            let s = Server::start(ctx, &dir.join("data")).await?;
            run.url = s.url.clone();
            run.kafka_addr = s.kafka_addr.clone();
            run.ferry = Some(s);
        }
        System::Nats => {
            let port = free_port()?;
            let store = dir.join("jetstream");
            let conf = dir.join("nats.conf");
            std::fs::write(
                &conf,
                format!(
                    "listen: \"127.0.0.1:{port}\"\njetstream {{\n  store_dir: {:?}\n  sync_interval: always\n}}\n",
                    store.display().to_string()
                ),
            )?;
            let mut child = spawn(Command::new("nats-server").arg("-c").arg(&conf), dir)?;
            wait_for_port(port, &mut child, "nats-server", dir).await?;
            run.url = format!("nats://127.0.0.1:{port}");
            run.other = Some(child);
        }
        System::RedisAlways | System::RedisEverysec => {
            let port = free_port()?;
            let fsync = if system == System::RedisAlways {
                "always"
            } else {
                "everysec"
            };
            let mut child = spawn(
                Command::new("redis-server")
                    .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                    .args(["--appendonly", "yes", "--appendfsync", fsync])
                    .args(["--save", "", "--protected-mode", "no", "--daemonize", "no"])
                    .arg("--dir")
                    .arg(dir),
                dir,
            )?;
            wait_for_port(port, &mut child, "redis-server", dir).await?;
            run.url = format!("redis://127.0.0.1:{port}/");
            run.other = Some(child);
        }
        System::RabbitQuorum | System::RabbitClassic => {
            // A broker that opened its port but then went away (seen once on a CI
            // machine) is started again, up to three times, before the system is
            // reported as not run.
            let mut last = None;
            for attempt in 1..=3 {
                match start_rabbit(dir).await {
                    Ok((child, url)) => {
                        run.url = url;
                        run.other = Some(child);
                        last = None;
                        break;
                    }
                    Err(e) => {
                        eprintln!("rabbitmq-server, attempt {attempt} of 3: {e:#}");
                        last = Some(e);
                    }
                }
            }
            if let Some(e) = last {
                return Err(e);
            }
        }
    }
    Ok(run)
}
