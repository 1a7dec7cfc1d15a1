//! Redis for the tests: the key prefix each test's store lives under (removed with
//! every key under it when the test ends), and the three-master Redis Cluster a test
//! binary starts for itself when `HOPPER_TEST_REDIS_CLUSTER=start`.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The servers this binary started, stopped when its trials are done.
static SERVERS: Mutex<Vec<Child>> = Mutex::new(Vec::new());
/// The started cluster's URL, or why it could not start.
static CLUSTER: OnceLock<Result<String, String>> = OnceLock::new();
/// Where the started servers keep their files.
static CLUSTER_DIR: OnceLock<tempfile::TempDir> = OnceLock::new();

/// The URL of this binary's own cluster, started on first use.
pub fn started() -> Result<String, String> {
    CLUSTER.get_or_init(start).clone()
}

/// Stops the servers this binary started.
pub fn stop() {
    for mut server in SERVERS.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        let _ = server.kill();
        let _ = server.wait();
    }
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn start() -> Result<String, String> {
    let dir = CLUSTER_DIR.get_or_init(|| tempfile::tempdir().expect("cannot create a temp dir"));
    let mut ports = Vec::new();
    for _ in 0..3 {
        let port = free_port()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--cluster-enabled",
                "yes",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server (is it installed?): {e}"))?;
        SERVERS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child);
        ports.push(port);
    }
    let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    for address in &addresses {
        wait_for(address, "PING", "PONG")?;
    }
    let created = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addresses)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .map_err(|e| format!("cannot run redis-cli: {e}"))?;
    if !created.status.success() {
        return Err(format!(
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&created.stdout)
        ));
    }
    for address in &addresses {
        wait_for(address, "CLUSTER INFO", "cluster_state:ok")?;
    }
    Ok(format!("redis+cluster://{}", addresses.join(",")))
}

/// Waits until `redis-cli -h/-p of address COMMAND` prints `expected`.
fn wait_for(address: &str, command: &str, expected: &str) -> Result<(), String> {
    let (host, port) = address.split_once(':').unwrap_or((address, "6379"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let output = Command::new("redis-cli")
            .args(["-h", host, "-p", port])
            .args(command.split(' '))
            .output()
            .map_err(|e| format!("cannot run redis-cli: {e}"))?;
        if String::from_utf8_lossy(&output.stdout).contains(expected) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{address} never answered {command} with {expected}"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One test's key prefix `t_<16 random hex digits>:` on a server or cluster; dropping
/// it deletes every key under it, on every node.
pub struct KeyPrefix {
    base_url: String,
    prefix: String,
}

impl KeyPrefix {
    /// A fresh prefix on the server or cluster of `base_url`.
    pub fn new(base_url: &str) -> KeyPrefix {
        KeyPrefix {
            base_url: base_url.to_owned(),
            prefix: format!("t_{:016x}:", rand::random::<u64>()),
        }
    }

    /// `base_url` with Hopper's own `prefix` parameter.
    pub fn store_url(&self) -> String {
        let separator = if self.base_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{separator}prefix={}", self.base_url, self.prefix)
    }

    /// The `redis://` URL of each node that may hold keys.
    fn nodes(&self) -> Vec<String> {
        let base = self.base_url.split('?').next().unwrap_or_default();
        match base.strip_prefix("redis+cluster://") {
            Some(hosts) => hosts
                .trim_end_matches('/')
                .split(',')
                .map(|host| format!("redis://{host}"))
                .collect(),
            None => vec![base.to_owned()],
        }
    }
}

impl Drop for KeyPrefix {
    fn drop(&mut self) {
        let pattern = format!("{}*", self.prefix);
        for node in self.nodes() {
            let deleted = (|| -> redis::RedisResult<()> {
                let mut connection = redis::Client::open(node.as_str())?.get_connection()?;
                let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut connection)?;
                // One key per command: on a cluster node, keys of several slots may not meet in one DEL.
                for key in keys {
                    let _: i64 = redis::cmd("DEL").arg(&key).query(&mut connection)?;
                }
                Ok(())
            })();
            if let Err(error) = deleted {
                eprintln!("cannot delete the test keys {pattern} on {node}: {error}");
            }
        }
    }
}

/// A `redis-server` of the test's own, killed when dropped.
pub struct OwnRedis(
    std::process::Child,
    u16,
    #[allow(dead_code)] tempfile::TempDir,
);

impl OwnRedis {
    /// Starts one on a free port with `args` added, and waits until it answers.
    pub fn start(args: &[&str]) -> OwnRedis {
        let (port, dir) = (free_port().unwrap(), tempfile::tempdir().unwrap());
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir.path())
            .args(args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        // Owned at once, so a server that never answers is killed too.
        let server = OwnRedis(child, port, dir);
        let url = format!("redis://127.0.0.1:{port}");
        for _ in 0..100 {
            let up = redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if up.is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server on {port} did not answer");
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.1
    }

    /// Replicas done with their first sync.
    pub fn replicas(&self) -> i64 {
        let mut connection = redis::Client::open(format!("redis://127.0.0.1:{}", self.1))
            .unwrap()
            .get_connection()
            .unwrap();
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut connection)
            .unwrap();
        // Only a replica done with its first sync acknowledges writes.
        info.lines()
            .filter(|l| l.starts_with("slave") && l.contains("state=online"))
            .count() as i64
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
