//! `hopper serve` as a child process: the compiled binary on a test's store, with
//! a configuration file of the test's, killed with SIGKILL (no drain, no flush)
//! when the test says so and started again on the same store and port. For what
//! only a real process shows: a crash, its memory and CPU time in `/proc`, the
//! clients of other languages. Dropping it kills the process, so a failing test
//! leaves none behind.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ADMIN_SECRET;

/// A running `hopper serve`, its admin bootstrapped with [`ADMIN_SECRET`].
pub struct ServeProcess {
    child: Child,
    /// Where it listens, on 127.0.0.1; kept across [`ServeProcess::restart`], so a
    /// client's URLs stay valid.
    pub port: u16,
    config_path: PathBuf,
    log_path: PathBuf,
}

impl ServeProcess {
    /// Starts the binary on the store at `store_url` with `config` (TOML, after the
    /// `listen` and `store` keys this writes) in `dir`, where its log goes too, and
    /// waits until `/health` answers 200.
    pub fn start(store_url: &str, dir: &Path, config: &str) -> ServeProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("cannot find a free port")
            .port();
        let config_path = dir.join(format!("hopper-{port}.toml"));
        std::fs::write(
            &config_path,
            format!("listen = \"127.0.0.1:{port}\"\nstore = \"{store_url}\"\n{config}"),
        )
        .expect("cannot write the configuration");
        let log_path = dir.join(format!("hopper-{port}.log"));
        let child = spawn(&config_path, &log_path);
        let mut process = ServeProcess {
            child,
            port,
            config_path,
            log_path,
        };
        process.wait_until_healthy();
        process
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The process id, for `/proc/<pid>/...`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The CPU time (user and system) the process used so far, from
    /// `/proc/<pid>/stat`.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .expect("cannot read /proc/<pid>/stat (Linux only)");
        // The fields after the parenthesised command name; utime and stime are the
        // 14th and 15th of the line, the 12th and 13th of these.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |index: usize| -> u64 {
            fields
                .get(index)
                .and_then(|field| field.parse().ok())
                .unwrap_or_else(|| panic!("no field {index} in {stat}"))
        };
        // SAFETY: sysconf reads a constant of the system and has no preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_secs_f64((ticks(11) + ticks(12)) as f64 / per_second as f64)
    }

    /// The process's resident memory in KiB (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("cannot read /proc/<pid>/status (Linux only)");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in {status}"))
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGKILL: nothing is drained or flushed.
    pub fn kill_hard(&mut self) {
        self.child.kill().expect("cannot SIGKILL hopper");
        self.child.wait().expect("cannot reap hopper");
    }

    /// Kills the process with SIGKILL if it runs, then starts it again with the same
    /// configuration: the same store and port.
    pub fn restart(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill_hard();
        }
        // The log of the killed process stays beside the new one's.
        let old_log = self.log_path.with_extension(format!(
            "log.{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        let _ = std::fs::rename(&self.log_path, old_log);
        self.child = spawn(&self.config_path, &self.log_path);
        self.wait_until_healthy();
    }

    /// Polls `GET /health` over a plain socket (so callers need no runtime) until it
    /// answers 200; panics with the log if the process exits or 30 s pass.
    fn wait_until_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("cannot poll hopper") {
                panic!("hopper exited early with {status}: {}", self.log());
            }
            if health_is_ok(self.port) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "hopper not healthy within 30 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn spawn(config: &Path, log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("cannot create the server's log");
    Command::new(env!("CARGO_BIN_EXE_hopper"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env("HOPPER_ADMIN_SECRET", ADMIN_SECRET)
        .env("RUST_LOG", "warn")
        .env_remove("HOPPER_CONFIG")
        .env_remove("HOPPER_LISTEN")
        .env_remove("HOPPER_STORE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("cannot run the hopper binary")
}

/// Whether `GET /health` on `port` answers 200.
fn health_is_ok(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request =
        format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}
