//! Servers for tests: in this process ([`TestServer`]), the `eshost`
//! binary as a child (its "listening on" line, its exit), and the
//! certificates an HTTPS server and its clients are given.

use eshost::Host;
use eshost_server::{self as server, ServerConfig};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::oneshot;

/// A server on a free loopback port, serving `host`, stopped by `stop`.
pub struct TestServer {
    pub base: String,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<Result<(), server::ServeError>>,
}

impl TestServer {
    pub async fn start(host: Host, config: ServerConfig) -> Self {
        Self::start_app(server::App::new(host, config)).await
    }

    pub async fn start_app(app: server::App) -> Self {
        // Listening as `eshost serve` does, with its backlog.
        let listener = server::connections::listen(
            ([127, 0, 0, 1], 0).into(),
            server::connections::DEFAULT_LISTEN_BACKLOG,
        )
        .unwrap();
        let scheme = if app.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let base = format!("{scheme}://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(server::serve(listener, app, async move {
            let _ = stopped.await;
        }));
        Self {
            base,
            stop: Some(stop),
            done,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.done).await.unwrap().unwrap();
    }
}

/// Reads a served `eshost serve`'s "listening on" line from its stdout.
pub fn listening_address(child: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    line.trim()
        .strip_prefix("eshost listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_string()
}

/// A child process, killed and reaped when dropped, so that a failing
/// assertion leaves nothing running. Derefs to the child.
pub struct KilledOnDrop(std::process::Child);

impl KilledOnDrop {
    pub fn new(child: std::process::Child) -> Self {
        Self(child)
    }
}

impl std::ops::Deref for KilledOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for KilledOnDrop {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        // Both fail harmlessly when the test has already stopped it.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends SIGTERM to a child: what a service manager sends to stop it.
pub fn signal_term(child: &std::process::Child) {
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -TERM {} failed", child.id());
}

/// Stops a child with SIGTERM and waits for it to exit, killing it (and
/// failing) past `deadline`. Blocks: from async code, call it on a
/// blocking thread.
pub fn terminate(child: &mut std::process::Child, deadline: Duration) -> std::process::ExitStatus {
    signal_term(child);
    wait_with_deadline(child, deadline)
}

/// Waits for a child, killing it (and failing) past `deadline`.
pub fn wait_with_deadline(
    child: &mut std::process::Child,
    deadline: Duration,
) -> std::process::ExitStatus {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            panic!("the server did not exit within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A certificate authority and a server certificate it signed (for
/// `localhost` and 127.0.0.1), as PEM files in a directory of their own:
/// what an operator gives `eshost serve --tls-cert/--tls-key`, and its
/// clients `--ca-file`.
pub struct TestCertificates {
    _dir: tempfile::TempDir,
    /// The authority's certificate: the root a client trusts.
    pub ca: PathBuf,
    /// The server's certificate.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

impl Default for TestCertificates {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCertificates {
    pub fn new() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "eshost test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        Self {
            ca: write("ca.pem", ca_cert.pem()),
            cert: write("server.pem", cert.pem()),
            key: write("server-key.pem", key.serialize_pem()),
            _dir: dir,
        }
    }
}
