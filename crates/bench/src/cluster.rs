//! A deployment of several hosts on one machine, for the tests and the
//! bench: `eshost serve` processes on loopback ports behind HAProxy, all on
//! one database, configured from the reference configuration
//! (`deploy/haproxy.cfg`) with only its addresses replaced, so what is
//! measured and tested is what the repository tells people to run.
//!
//! Every process is a child of this one and is killed when the [`Cluster`]
//! is dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The reference HAProxy configuration.
pub const REFERENCE_CONFIG: &str = include_str!("../deploy/haproxy.cfg");

/// How long a process may take to start answering.
const STARTUP: Duration = Duration::from_secs(30);

/// How HAProxy picks a host for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// The reference configuration: a consistent hash of the aggregate and
    /// id, so one host serves each aggregate.
    ConsistentHash,
    /// Each request to the next host in turn: every host serves every
    /// aggregate (to show what routing by aggregate saves).
    RoundRobin,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Hosts taking traffic from the start.
    pub hosts: usize,
    /// Hosts started but declared `disabled` to HAProxy until
    /// [`Cluster::enable`] adds them.
    pub spares: usize,
    pub routing: Routing,
    pub database_url: String,
    /// The modules directory every host loads.
    pub modules: PathBuf,
    /// The `eshost` binary.
    pub eshost: PathBuf,
    /// The `haproxy` binary.
    pub haproxy: PathBuf,
    /// Every host's `ESHOST_TOKEN`, if any.
    pub token: Option<String>,
}

impl ClusterConfig {
    pub fn new(hosts: usize, routing: Routing, database_url: &str, modules: &Path) -> Self {
        Self {
            hosts,
            spares: 0,
            routing,
            database_url: database_url.to_string(),
            modules: modules.to_path_buf(),
            eshost: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("eshost")),
            // Debian puts it in /usr/sbin, which not every PATH holds.
            haproxy: ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"]
                .iter()
                .map(PathBuf::from)
                .find(|path| path.exists())
                .unwrap_or_else(|| PathBuf::from("haproxy")),
            token: None,
        }
    }
}

/// Why a cluster could not start or be changed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot start {program}: {source}{hint}", hint = if program.ends_with("haproxy") { " (install HAProxy: apt-get install haproxy)" } else { "" })]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{what} did not start within {STARTUP:?}: {why}")]
    Startup { what: String, why: String },
    #[error("HAProxy refused the configuration: {0}")]
    Config(String),
    #[error("HAProxy's runtime API answered {0:?}")]
    RuntimeApi(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Running hosts behind a running HAProxy.
pub struct Cluster {
    dir: PathBuf,
    haproxy: Child,
    hosts: Vec<HostProcess>,
    frontend: SocketAddr,
}

struct HostProcess {
    child: Child,
    address: SocketAddr,
}

impl Cluster {
    /// Starts the hosts, waits until each is ready, then starts HAProxy in
    /// front of them and waits until it answers.
    pub async fn start(config: &ClusterConfig) -> Result<Self, ClusterError> {
        let dir = std::env::temp_dir().join(format!("eshost-cluster-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        // Once the cluster exists its drop cleans up; before, this does
        // (the children are killed as they drop).
        let started = Self::start_in(config, dir.clone()).await;
        if started.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        started
    }

    async fn start_in(config: &ClusterConfig, dir: PathBuf) -> Result<Self, ClusterError> {
        let mut hosts = Vec::new();
        for n in 1..=config.hosts + config.spares {
            hosts.push(start_host(config, &dir, n).await?);
        }
        let client = reqwest::Client::new();
        for (n, host) in hosts.iter().enumerate() {
            let ready = format!("http://{}/readyz", host.address);
            if let Err(why) = wait_for(&client, &ready).await {
                return Err(ClusterError::Startup {
                    what: format!("host{}", n + 1),
                    why,
                });
            }
        }
        let frontend = free_port()?;
        let addresses: Vec<SocketAddr> = hosts.iter().map(|h| h.address).collect();
        let rendered = render_config(config, frontend, &addresses, &dir.join("haproxy.sock"));
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, rendered)?;
        let checked = Command::new(&config.haproxy)
            .arg("-c")
            .arg("-f")
            .arg(&path)
            .output()
            .await
            .map_err(spawn_failed(&config.haproxy))?;
        if !checked.status.success() {
            let why = String::from_utf8_lossy(&checked.stdout).to_string()
                + &String::from_utf8_lossy(&checked.stderr);
            return Err(ClusterError::Config(why.trim().replace('\n', "; ")));
        }
        let log = std::fs::File::create(dir.join("haproxy.log"))?;
        let haproxy = Command::new(&config.haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn_failed(&config.haproxy))?;
        let cluster = Self {
            dir,
            haproxy,
            hosts,
            frontend,
        };
        if let Err(why) = wait_for(&client, &cluster.url("/healthz")).await {
            let log = std::fs::read_to_string(cluster.dir.join("haproxy.log")).unwrap_or_default();
            return Err(ClusterError::Startup {
                what: "HAProxy".into(),
                why: format!("{why}; its log: {}", log.trim().replace('\n', "; ")),
            });
        }
        Ok(cluster)
    }

    /// Where clients connect: HAProxy's frontend.
    pub fn address(&self) -> SocketAddr {
        self.frontend
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.frontend)
    }

    /// `path` on host `n` itself, past HAProxy.
    pub fn host_url(&self, n: usize, path: &str) -> String {
        format!("http://{}{path}", self.hosts[n - 1].address)
    }

    /// Kills host `n` at once (SIGKILL): no drain, connections cut.
    pub async fn kill(&mut self, n: usize) -> Result<(), ClusterError> {
        let host = &mut self.hosts[n - 1];
        host.child.start_kill()?;
        host.child.wait().await?;
        Ok(())
    }

    /// Puts host `n` (a spare) into HAProxy's rotation.
    pub async fn enable(&self, n: usize) -> Result<(), ClusterError> {
        let answer = self
            .runtime_api(&format!("enable server hosts/host{n}"))
            .await?;
        if answer.trim().is_empty() {
            Ok(())
        } else {
            Err(ClusterError::RuntimeApi(answer.trim().to_string()))
        }
    }

    /// One command to HAProxy's runtime API; its answer.
    async fn runtime_api(&self, command: &str) -> Result<String, ClusterError> {
        let mut socket = tokio::net::UnixStream::connect(self.dir.join("haproxy.sock")).await?;
        socket.write_all(format!("{command}\n").as_bytes()).await?;
        let mut answer = String::new();
        socket.read_to_string(&mut answer).await?;
        Ok(answer)
    }

    /// HAProxy's own figures for the backend, from its runtime API's `show
    /// stat`: what it waited on, over the cluster's life so far.
    pub async fn proxy_stats(&self) -> Result<ProxyStats, ClusterError> {
        let csv = self.runtime_api("show stat").await?;
        ProxyStats::from_csv(&csv, "hosts")
            .ok_or_else(|| ClusterError::RuntimeApi(format!("no backend row in {csv:?}")))
    }

    /// One metric from host `n`'s `/metrics`, every label set added up
    /// (0 for a host that does not answer: a killed one has nothing to add).
    pub async fn metric(&self, n: usize, name: &str) -> f64 {
        let url = format!("http://{}/metrics", self.hosts[n - 1].address);
        match reqwest::get(&url).await {
            Ok(answer) => sum_of(&answer.text().await.unwrap_or_default(), name),
            Err(_) => 0.0,
        }
    }

    /// The sum of one metric over every host.
    pub async fn metric_sum(&self, name: &str) -> f64 {
        let mut sum = 0.0;
        for n in 1..=self.hosts.len() {
            sum += self.metric(n, name).await;
        }
        sum
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.haproxy.start_kill();
        for host in &mut self.hosts {
            let _ = host.child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What HAProxy counted for a backend (`show stat`; see HAProxy's
/// management guide, "CSV format"). The maxima are over the proxy's life,
/// which for a cluster started per run is the run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProxyStats {
    /// The longest a request waited in HAProxy's queue for a host
    /// (`qtime_max`): only hosts with a `maxconn` queue.
    pub queue_max_ms: f64,
    /// The longest a connection to a host took to open (`ctime_max`): a
    /// dropped handshake shows here as the second its SYN took to be resent.
    pub connect_max_ms: f64,
    /// Connections opened to the hosts (`connect`), and requests sent on
    /// one already open (`reuse`).
    pub connects: u64,
    pub reuses: u64,
    /// Connections to a host that failed (`econ`), and the attempts made
    /// again after one (`wretr`).
    pub connect_errors: u64,
    pub connect_retries: u64,
}

impl ProxyStats {
    /// The `backend` row of `show stat`'s CSV, read by its header's names.
    fn from_csv(csv: &str, backend: &str) -> Option<Self> {
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
        let row: Vec<&str> = lines
            .map(|line| line.split(',').collect::<Vec<_>>())
            .find(|row| row.len() > 1 && row[0] == backend && row[1] == "BACKEND")?;
        let field = |name: &str| -> f64 {
            header
                .iter()
                .position(|h| *h == name)
                .and_then(|i| row.get(i)?.parse().ok())
                .unwrap_or(0.0)
        };
        Some(Self {
            queue_max_ms: field("qtime_max"),
            connect_max_ms: field("ctime_max"),
            connects: field("connect") as u64,
            reuses: field("reuse") as u64,
            connect_errors: field("econ") as u64,
            connect_retries: field("wretr") as u64,
        })
    }
}

/// Starts `eshost serve` on a free loopback port; its address, from the
/// line it prints once it listens.
async fn start_host(
    config: &ClusterConfig,
    dir: &Path,
    n: usize,
) -> Result<HostProcess, ClusterError> {
    let log = std::fs::File::create(dir.join(format!("host{n}.log")))?;
    let mut command = Command::new(&config.eshost);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--no-watch"])
        .env("DATABASE_URL", &config.database_url)
        .env("ESHOST_MODULES", &config.modules);
    if let Some(token) = &config.token {
        command.env("ESHOST_TOKEN", token);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_failed(&config.eshost))?;
    let stdout = child.stdout.take().ok_or_else(|| ClusterError::Startup {
        what: format!("host{n}"),
        why: "no stdout".into(),
    })?;
    let mut line = String::new();
    let read = tokio::time::timeout(STARTUP, BufReader::new(stdout).read_line(&mut line)).await;
    let address = match read {
        Ok(Ok(_)) => line
            .trim()
            .strip_prefix("eshost listening on http://")
            .and_then(|a| a.parse().ok()),
        _ => None,
    };
    let Some(address) = address else {
        let log = std::fs::read_to_string(dir.join(format!("host{n}.log"))).unwrap_or_default();
        return Err(ClusterError::Startup {
            what: format!("host{n}"),
            why: format!("it printed {line:?}; its log: {}", log.trim()),
        });
    };
    Ok(HostProcess { child, address })
}

/// The reference configuration with this cluster's addresses: the
/// frontend's port, the runtime API's socket, one `server` line per host
/// (the spares `disabled`), and for round-robin the balance line swapped.
fn render_config(
    config: &ClusterConfig,
    frontend: SocketAddr,
    hosts: &[SocketAddr],
    socket: &Path,
) -> String {
    let mut lines = Vec::new();
    for line in REFERENCE_CONFIG.lines() {
        let directive = line.trim_start();
        let indent = &line[..line.len() - directive.len()];
        if directive.starts_with("server ") {
            continue;
        } else if directive.starts_with("stats socket ") {
            lines.push(format!(
                "{indent}stats socket {} mode 600 level admin",
                socket.display()
            ));
        } else if directive.starts_with("bind ") {
            lines.push(format!("{indent}bind {frontend}"));
        } else if config.routing == Routing::RoundRobin && directive.starts_with("balance ") {
            lines.push(format!("{indent}balance roundrobin"));
        } else if config.routing == Routing::RoundRobin && directive.starts_with("hash-type ") {
            continue;
        } else {
            lines.push(line.to_string());
        }
    }
    // The backend is the last section: its servers go at the end.
    for (i, address) in hosts.iter().enumerate() {
        let disabled = if i >= config.hosts { " disabled" } else { "" };
        lines.push(format!("    server host{} {address}{disabled}", i + 1));
    }
    lines.join("\n") + "\n"
}

/// A loopback port nothing listens on (bound and released).
fn free_port() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// Waits until `url` answers 200; else the last thing it did instead.
async fn wait_for(client: &reqwest::Client, url: &str) -> Result<(), String> {
    let deadline = Instant::now() + STARTUP;
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        match client.get(url).send().await {
            Ok(answer) if answer.status().is_success() => return Ok(()),
            Ok(answer) => last = format!("{url} answered {}", answer.status()),
            Err(e) => last = format!("{url}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(last)
}

/// The error for a program that could not be started.
fn spawn_failed(program: &Path) -> impl FnOnce(std::io::Error) -> ClusterError {
    let program = program.display().to_string();
    move |source| ClusterError::Spawn { program, source }
}

/// The sum of every sample of metric `name` in Prometheus' text format.
fn sum_of(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(routing: Routing) -> ClusterConfig {
        ClusterConfig {
            spares: 1,
            ..ClusterConfig::new(2, routing, "postgres://x", Path::new("m"))
        }
    }

    #[test]
    fn the_rendered_configuration_keeps_the_reference_routing() {
        let hosts: Vec<SocketAddr> = ["127.0.0.1:1001", "127.0.0.1:1002", "127.0.0.1:1003"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let frontend = "127.0.0.1:9000".parse().unwrap();
        let socket = Path::new("/tmp/x.sock");
        let hashed = render_config(&config(Routing::ConsistentHash), frontend, &hosts, socket);
        assert!(hashed.contains("balance uri depth 4"), "{hashed}");
        assert!(hashed.contains("hash-type consistent"));
        assert!(hashed.contains("bind 127.0.0.1:9000"));
        assert!(hashed.contains("stats socket /tmp/x.sock mode 600 level admin"));
        assert!(hashed.contains("server host1 127.0.0.1:1001\n"));
        assert!(hashed.contains("server host3 127.0.0.1:1003 disabled\n"));
        assert!(
            !hashed.contains("8081"),
            "the reference servers are replaced"
        );
        let round = render_config(&config(Routing::RoundRobin), frontend, &hosts, socket);
        assert!(round.contains("balance roundrobin"));
        assert!(!round.contains("hash-type"));
        assert!(round.contains("option httpchk GET /readyz"));
    }

    #[test]
    fn proxy_stats_are_read_by_their_names() {
        let csv = "# pxname,svname,qcur,qmax,econ,wretr,connect,reuse,qtime_max,ctime_max,\n\
                   eshost,FRONTEND,,,,,,,,,\n\
                   hosts,host1,0,0,0,0,9,90,0,3,\n\
                   hosts,BACKEND,0,4,2,1,256,1744,12,1003,\n";
        let stats = ProxyStats::from_csv(csv, "hosts").unwrap();
        assert_eq!(
            stats,
            ProxyStats {
                queue_max_ms: 12.0,
                connect_max_ms: 1003.0,
                connects: 256,
                reuses: 1744,
                connect_errors: 2,
                connect_retries: 1,
            }
        );
        assert_eq!(ProxyStats::from_csv(csv, "other"), None);
    }

    #[test]
    fn metric_sums_add_every_label_set() {
        let text = "# TYPE eshost_appends counter\neshost_appends_total 3\n\
                    eshost_commands_total{aggregate=\"A\",outcome=\"ok\"} 2\n\
                    eshost_commands_total{aggregate=\"B\",outcome=\"ok\"} 5\n\
                    eshost_commands_total_other 100\n";
        assert_eq!(sum_of(text, "eshost_commands_total"), 7.0);
        assert_eq!(sum_of(text, "eshost_appends_total"), 3.0);
    }
}
