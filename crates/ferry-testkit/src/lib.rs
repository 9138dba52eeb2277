//! Starts the real `ferry serve` for Ferry's integration tests and its benchmark tool:
//! on free ports (HTTP and Kafka both on 127.0.0.1 port 0), with JSON logs, ready once
//! it logs "Ferry is ready." with the addresses it bound, and killed when dropped.
//!
//! ```no_run
//! # fn main() -> Result<(), ferry_testkit::StartError> {
//! let s = ferry_testkit::Launch::new("target/debug/ferry", "/tmp/data".as_ref())
//!     .args(["--retention-check-ms", "100"])
//!     .start()?;
//! println!("HTTP at {}, Kafka at {}", s.url, s.kafka);
//! # Ok(())
//! # }
//! ```

use ferry_log::sync::lock;
use serde_json::Value;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `ferry serve` with HTTP and Kafka on free ports of 127.0.0.1 and its data in
/// `data_dir`: the command every server of the tests starts from.
pub fn serve_command(bin: impl AsRef<OsStr>, data_dir: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args([
        "serve",
        "--http-addr",
        "127.0.0.1:0",
        "--kafka-addr",
        "127.0.0.1:0",
        "--data-dir",
    ])
    .arg(data_dir);
    cmd
}

/// How to start a server: [`serve_command`] with JSON logs, plus what a test adds.
pub struct Launch {
    cmd: Command,
    data_dir: PathBuf,
    wait: Duration,
    log: LogLines,
}

/// What becomes of the server's log lines once it is ready.
#[derive(Clone, Copy, PartialEq)]
enum LogLines {
    /// Kept for [`Server::logs`].
    Keep,
    /// Read and dropped (a long benchmark run).
    Drop,
    /// Not read: the pipe is closed.
    Close,
}

/// Why a server did not start.
#[derive(Debug)]
pub enum StartError {
    /// The binary could not be run.
    Spawn(std::io::Error),
    /// It did not log that it was ready in time (it is killed): its log lines so far.
    NotReady(Vec<String>),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Spawn(e) => write!(f, "cannot run ferry: {e}"),
            StartError::NotReady(_) => write!(f, "ferry did not start"),
        }
    }
}

impl std::error::Error for StartError {}

impl Launch {
    pub fn new(bin: impl AsRef<OsStr>, data_dir: &Path) -> Launch {
        let mut cmd = serve_command(bin, data_dir);
        cmd.args(["--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        Launch {
            cmd,
            data_dir: data_dir.to_path_buf(),
            wait: Duration::from_secs(20),
            log: LogLines::Keep,
        }
    }

    /// More `ferry serve` arguments.
    pub fn args<I, S>(mut self, args: I) -> Launch
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// An environment variable of the server.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Launch {
        self.cmd.env(key, value);
        self
    }

    /// Starts the server with a limit of `n` open files (soft and hard, so that the
    /// server cannot raise it), as on a machine with a low `ulimit -n`.
    pub fn open_files_limit(mut self, n: u64) -> Launch {
        use std::os::unix::process::CommandExt;
        let limit = libc::rlimit {
            rlim_cur: n,
            rlim_max: n,
        };
        // SAFETY: setrlimit is async-signal-safe and touches nothing of the parent.
        unsafe {
            self.cmd.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        self
    }

    /// How long the server may take to be ready [default: 20 s].
    pub fn wait(mut self, wait: Duration) -> Launch {
        self.wait = wait;
        self
    }

    /// Closes the server's log pipe once it is ready (it must keep serving), instead of
    /// reading and keeping its log lines.
    pub fn close_log_when_ready(mut self) -> Launch {
        self.log = LogLines::Close;
        self
    }

    /// Reads the server's log lines but keeps none once it is ready (for long runs).
    pub fn drop_log_when_ready(mut self) -> Launch {
        self.log = LogLines::Drop;
        self
    }

    /// Starts the server and waits until it is ready.
    pub fn start(mut self) -> Result<Server, StartError> {
        let mut child = self.cmd.spawn().map_err(StartError::Spawn)?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(stderr) = child.stderr.take() {
            let (sink, after_ready) = (Arc::clone(&logs), self.log);
            std::thread::spawn(move || read_log(stderr, &sink, after_ready, tx));
        }
        match rx.recv_timeout(self.wait) {
            Ok((addr, kafka)) => Ok(Server {
                child,
                url: format!("http://{addr}"),
                kafka,
                data_dir: self.data_dir,
                logs,
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                // The last lines, written as it died.
                std::thread::sleep(Duration::from_millis(100));
                let l = lock(&logs).clone();
                Err(StartError::NotReady(l))
            }
        }
    }
}

/// Keeps the server's log lines in `sink` and sends the HTTP and Kafka addresses of its
/// "Ferry is ready." line to `ready`; from there on does as `after_ready` says.
fn read_log(
    stderr: impl std::io::Read,
    sink: &Mutex<Vec<String>>,
    after_ready: LogLines,
    ready: std::sync::mpsc::Sender<(String, String)>,
) {
    let mut keep = LogLines::Keep;
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        if keep == LogLines::Drop {
            continue;
        }
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            if v["fields"]["message"] == "Ferry is ready." {
                let field = |k: &str| v["fields"][k].as_str().unwrap_or_default().to_string();
                let _ = ready.send((field("http_addr"), field("kafka_addr")));
                keep = after_ready;
            }
        }
        lock(sink).push(line);
        if keep == LogLines::Close {
            return;
        }
    }
}

/// A running `ferry serve`, killed (`kill -9`) when dropped.
pub struct Server {
    pub child: Child,
    /// `http://host:port` of the HTTP API.
    pub url: String,
    /// host:port of the Kafka listener.
    pub kafka: String,
    pub data_dir: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// The server's log lines so far (JSON).
    pub fn logs(&self) -> Vec<String> {
        lock(&self.logs).clone()
    }

    /// `kill -9`: no chance to sync or clean up.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(mut self) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("ferry did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident memory of the server process, in MiB (0 where it cannot be read).
    pub fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
