//! `eshost serve` as a real process: a drain on SIGTERM, request logs,
//! connections it cannot be knocked over by (idle ones, a burst), and the
//! command line as a client of a server that wants a token.

use crate::util::*;
use eshost_server::ServerConfig;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Creates a sale of `stock` with a `CreateFlashSale` posted to `url`.
async fn create_sale(client: &reqwest::Client, url: &str, stock: u64) {
    let created = client
        .post(url)
        .header("content-type", "application/json")
        .body(format!(r#"{{"initialStock":{stock}}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200, "creating the sale");
}

/// SIGTERM in the middle of a load through the real binary: the process
/// exits 0, and every command answered 200 is in the store exactly once,
/// with all of its events; no command is recorded twice. The server also
/// runs the sales-summary projection: it stops with a view that holds
/// exactly the events up to its checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_every_accepted_command() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_eshost"))
        .args(["serve", "--listen", "127.0.0.1:0", "--run-projections"])
        .env("DATABASE_URL", &db.url)
        .env("ESHOST_MODULES", modules_dir())
        .env("ESHOST_PROJECTIONS", projections_dir())
        .env("ESHOST_CACHE_DIR", dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let base = listening_address(&mut child);
    let client = reqwest::Client::new();
    let url =
        |command: &str| format!("{base}/v1/aggregates/FlashSaleItem/drain/commands/{command}");
    create_sale(&client, &url("CreateFlashSale"), 1000).await;

    const COMMANDS: usize = 2_000;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let callers: Vec<_> = (0..32)
        .map(|_| {
            let (client, next, answered, url) = (
                client.clone(),
                next.clone(),
                answered.clone(),
                url("PurchaseItem"),
            );
            tokio::spawn(async move {
                let mut ok = Vec::new();
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= COMMANDS {
                        return ok;
                    }
                    let key = format!("drain-{n}");
                    let sent = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("Idempotency-Key", &key)
                        .body(format!(r#"{{"buyerId":"b{n}","quantity":1}}"#))
                        .send()
                        .await;
                    answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    match sent {
                        Ok(response) if response.status().as_u16() == 200 => ok.push(key),
                        // Refused while draining, or the connection closed:
                        // this caller stops, as a client would fail over.
                        _ => return ok,
                    }
                }
            })
        })
        .collect();
    while answered.load(std::sync::atomic::Ordering::Relaxed) < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    signal_term(&child);
    let mut accepted = Vec::new();
    for caller in callers {
        accepted.extend(caller.await.unwrap());
    }
    let status = wait_with_deadline(&mut child, Duration::from_secs(40));
    assert_eq!(status.code(), Some(0), "the server exits 0 after draining");
    assert!(
        accepted.len() >= 300 && accepted.len() < COMMANDS,
        "{} accepted",
        accepted.len()
    );

    let host = db.default_host().await;
    let stream = host.events(FLASH_SALE, "drain").await.unwrap();
    assert_gapless(&stream);
    let mut recorded = std::collections::HashMap::<String, usize>::new();
    for event in &stream[1..] {
        *recorded
            .entry(event.metadata["commandId"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert!(
        recorded.values().all(|&n| n == 1),
        "a purchase is one event, recorded once"
    );
    for key in &accepted {
        assert_eq!(
            recorded.get(key),
            Some(&1),
            "{key} was answered 200 but is not stored"
        );
    }

    let store = eshost::store::open(&db.url).await.unwrap();
    let projection = store.views().projections().await.unwrap().pop().unwrap();
    assert_eq!(projection.status, "ok", "{projection:?}");
    let item = store
        .views()
        .view_document("sales-summary", "item:drain")
        .await
        .unwrap()
        .expect("the projection ran while the server served")
        .to_value();
    let purchases_seen = stream[1..]
        .iter()
        .filter(|e| e.name == "ItemPurchased" && e.position <= projection.position)
        .count() as u64;
    assert_eq!(item["buyers"].as_u64(), Some(purchases_seen), "{item}");
    db.cleanup().await;
}

/// With `RUST_LOG=...,eshost::access=debug` and `--log-format json`, each
/// request is one JSON line on stderr with its method, path and status; by
/// default there are none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_logs_are_json_lines_when_asked_for() {
    let db = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let serve = |log_filter: &str| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_eshost"))
            .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
            .env("DATABASE_URL", &db.url)
            .env("ESHOST_MODULES", modules_dir())
            .env("ESHOST_CACHE_DIR", dir.path())
            .env("RUST_LOG", log_filter)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let base = listening_address(&mut child);
        (child, base)
    };
    let mut access_lines = Vec::new();
    for filter in ["info", "info,eshost::access=debug"] {
        let (mut child, base) = serve(filter);
        let answer = reqwest::Client::new()
            .get(format!("{base}/v1/aggregates/FlashSaleItem/nobody/events"))
            .header("x-request-id", "trace-me-7")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 200);
        assert_eq!(answer.headers()["x-request-id"], "trace-me-7");
        assert_eq!(
            terminate(&mut child, Duration::from_secs(20)).code(),
            Some(0)
        );
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        let lines: Vec<Value> = stderr
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect();
        access_lines.push(
            lines
                .into_iter()
                .filter(|l| l["target"] == "eshost::access")
                .collect::<Vec<_>>(),
        );
    }
    assert!(access_lines[0].is_empty(), "{:?}", access_lines[0]);
    let [line] = &access_lines[1][..] else {
        panic!("one request, one line: {:?}", access_lines[1]);
    };
    assert_eq!(line["fields"]["method"], "GET", "{line}");
    assert_eq!(
        line["fields"]["path"],
        "/v1/aggregates/FlashSaleItem/nobody/events"
    );
    assert_eq!(line["fields"]["status"], 200, "{line}");
    // The request's id is on each of its log lines, in its span.
    assert_eq!(line["span"]["id"], "trace-me-7", "{line}");
}

/// The command line as a client sends the token from `ESHOST_TOKEN`; a
/// wrong one is refused with the server's one-line answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_sends_its_token() {
    let db = TestDb::sqlite().await;
    let host = db.default_host().await;
    let config = ServerConfig {
        tokens: eshost_server::auth::Tokens::single("s3cret").unwrap(),
        ..ServerConfig::default()
    };
    let server = TestServer::start(host, config).await;
    // The command line, as a client: the token from ESHOST_TOKEN.
    let base = server.base.clone();
    let cli = move |token: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_eshost"))
            .args(["aggregates", "--json", "--server", &base])
            .env("ESHOST_TOKEN", token)
            .output()
            .unwrap()
    };
    let (denied, allowed) = tokio::task::spawn_blocking(move || (cli("guess"), cli("s3cret")))
        .await
        .unwrap();
    assert_eq!(denied.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&denied.stderr).contains("Bearer"));
    assert!(allowed.status.success());
    let listed: Value = serde_json::from_slice(&allowed.stdout).unwrap();
    assert_eq!(listed, served_aggregates());
    server.stop().await;
    db.cleanup().await;
}

/// 1,100 connections that send nothing or stop halfway through their
/// headers, against `eshost serve` under the 1,024 open files systemd
/// gives a service by default: `/readyz` and commands on new connections
/// keep answering the whole time, and SIGTERM still ends the process at
/// once. (Accepting failed with "Too many open files", and everyone timed
/// out.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_send_nothing_cannot_keep_others_out() {
    use tokio::io::AsyncWriteExt;
    raise_open_file_limit(4_096);
    let db = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let child = std::process::Command::new("sh")
        .args(["-c", r#"ulimit -n 1024 && exec "$0" "$@""#])
        .arg(env!("CARGO_BIN_EXE_eshost"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", &db.url)
        .env("ESHOST_MODULES", modules_dir())
        .env("ESHOST_CACHE_DIR", dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = KilledOnDrop::new(child);
    let base = listening_address(&mut server);
    let address = base.trim_start_matches("http://").to_string();
    // A new connection for every request, as a probe makes one.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let command =
        |name: &str| format!("{base}/v1/aggregates/FlashSaleItem/crowded/commands/{name}");
    create_sale(&client, &command("CreateFlashSale"), 1000).await;

    let mut hogs = Vec::new();
    for n in 0..1_100 {
        let mut tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
        if n % 2 == 1 {
            tcp.write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                .await
                .unwrap();
        }
        hogs.push(tcp);
    }
    let mut failures = Vec::new();
    for n in 0..20 {
        let ready = client.get(format!("{base}/readyz")).send().await;
        if !matches!(&ready, Ok(r) if r.status() == 200) {
            failures.push(format!("readyz: {ready:?}"));
        }
        let bought = client
            .post(command("PurchaseItem"))
            .header("content-type", "application/json")
            .body(format!(r#"{{"buyerId":"b{n}","quantity":1}}"#))
            .send()
            .await;
        if !matches!(&bought, Ok(r) if r.status() == 200) {
            failures.push(format!("purchase {n}: {bought:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        failures.is_empty(),
        "{} of 40 requests failed beside 1,100 idle connections: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    let started = std::time::Instant::now();
    let status =
        tokio::task::spawn_blocking(move || terminate(&mut server, Duration::from_secs(20)))
            .await
            .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "SIGTERM took {:?} with idle connections open",
        started.elapsed()
    );
    drop(hogs);
    db.cleanup().await;
}

/// A burst of 1,000 connections while the server is not accepting (stopped
/// with SIGSTOP, as a busy accept loop is for a moment): the kernel
/// completes every one, because the server asked for a backlog that holds
/// them, and once the server runs again it answers on each. (With the
/// backlog of 128 the server had, the kernel completed 129 and dropped the
/// rest's handshakes: a load balancer opening connections for 256 callers
/// at once stalled for the second a SYN takes to be sent again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kernel_holds_a_burst_of_connections_the_server_has_not_accepted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const BURST: usize = 1_000;
    raise_open_file_limit(4_096);
    let db = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_eshost"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", &db.url)
        .env("ESHOST_MODULES", modules_dir())
        .env("ESHOST_CACHE_DIR", dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = KilledOnDrop::new(child);
    let base = listening_address(&mut server);
    let address = base.trim_start_matches("http://").to_string();
    let pid = libc::pid_t::try_from(server.id()).unwrap();
    // SAFETY: kill only sends a signal, to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);

    // Shorter than the one second a dropped SYN waits to be sent again.
    let deadline = Duration::from_millis(700);
    let connecting: Vec<_> = (0..BURST)
        .map(|_| {
            let address = address.clone();
            tokio::spawn(async move {
                tokio::time::timeout(deadline, tokio::net::TcpStream::connect(address)).await
            })
        })
        .collect();
    let mut connected = Vec::new();
    for attempt in connecting {
        if let Ok(Ok(tcp)) = attempt.await.unwrap() {
            connected.push(tcp);
        }
    }
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    assert_eq!(
        connected.len(),
        BURST,
        "the kernel completed {} of {BURST} connections while the server was not accepting",
        connected.len()
    );
    // Each is a connection the server now serves: a probe on every tenth.
    for tcp in connected.iter_mut().step_by(10) {
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    drop(connected);
    let status =
        tokio::task::spawn_blocking(move || terminate(&mut server, Duration::from_secs(20)))
            .await
            .unwrap();
    assert!(status.success(), "{status:?}");
    db.cleanup().await;
}

/// This test process's own soft limit on open files, raised to `at_least`
/// (within the hard limit): it opens a thousand sockets of its own.
fn raise_open_file_limit(at_least: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < at_least {
            limit.rlim_cur = at_least.min(limit.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
}

/// `eshost serve` with these arguments and variables, expected to stop
/// at once: its one line of stderr.
pub(crate) fn refused_start(args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_eshost"));
    command
        .arg("serve")
        .args(args)
        .env_remove("DATABASE_URL")
        .env("ESHOST_MODULES", modules_dir())
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (variable, value) in env {
        command.env(variable, value);
    }
    let mut child = command.spawn().unwrap();
    let status = wait_with_deadline(&mut child, Duration::from_secs(20));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{args:?} {env:?}: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    stderr
}

/// A token set but empty, or only spaces, stops `serve` with one line,
/// rather than serving with no auth at all. (It served, open to all.)
#[test]
fn an_empty_token_refuses_to_start() {
    let loopback = ["--listen", "127.0.0.1:0"];
    for (variable, value) in [
        ("ESHOST_TOKEN", ""),
        ("ESHOST_TOKEN", "   "),
        ("ESHOST_ADMIN_TOKEN", ""),
    ] {
        let stderr = refused_start(&loopback, &[(variable, value)]);
        assert!(stderr.contains("empty"), "{stderr}");
    }
}

/// Listening where other machines can reach it, with no token, needs
/// --allow-unauthenticated. (It served, open to all, and said nothing.)
#[test]
fn serving_other_machines_without_a_token_must_be_asked_for() {
    let stderr = refused_start(&["--listen", "0.0.0.0:0"], &[]);
    assert!(stderr.contains("--allow-unauthenticated"), "{stderr}");
    assert!(stderr.contains("0.0.0.0:0"), "{stderr}");
}

/// A tokens file that cannot be used stops the start with one line that
/// names the token and the fault, never a secret.
#[test]
fn a_bad_tokens_file_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[[token]]\nname = \"ci\"\nsecret = \"hunter22\"\nscopes = [\"reed\"]\n",
            "unknown variant",
        ),
        (
            "[[token]]\nname = \"ci\"\nsecret_env = \"ESHOST_TEST_UNSET_SECRET\"\nscopes = [\"read\"]\n",
            "ESHOST_TEST_UNSET_SECRET",
        ),
        (
            "[[token]]\nname = \"a\"\nsecret = \"hunter22\"\nscopes = [\"read\"]\n\
             [[token]]\nname = \"b\"\nsecret = \"hunter22\"\nscopes = [\"write\"]\n",
            "tokens a and b have the same secret",
        ),
        ("# no tokens\n", "holds no [[token]]"),
    ];
    for (n, (text, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("tokens{n}.toml"));
        std::fs::write(&path, text).unwrap();
        let path = path.to_str().unwrap();
        let stderr = refused_start(&["--listen", "127.0.0.1:0", "--tokens", path], &[]);
        assert!(stderr.contains(expected), "{text}: {stderr}");
        assert!(
            !stderr.contains("hunter22"),
            "a secret in the error: {stderr}"
        );
    }
}

/// Named tokens from a file, the secret from a variable: each is let in
/// to what its scopes allow, through the real binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokens_file_gives_each_token_its_scopes() {
    let db = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    std::fs::write(
        &file,
        r#"
[[token]]
name = "dashboard"
secret_env = "DASHBOARD_SECRET"
scopes = ["read"]

[[token]]
name = "shop"
secret = "shop-secret"
scopes = ["read", "write"]
"#,
    )
    .unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_eshost"))
        .args(["serve", "--listen", "127.0.0.1:0", "--tokens"])
        .arg(&file)
        .env("DATABASE_URL", &db.url)
        .env("ESHOST_MODULES", modules_dir())
        .env("ESHOST_CACHE_DIR", dir.path())
        .env("DASHBOARD_SECRET", "dashboard-secret")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = KilledOnDrop::new(child);
    let base = listening_address(&mut server);
    let client = reqwest::Client::new();
    let create = format!("{base}/v1/aggregates/FlashSaleItem/f1/commands/CreateFlashSale");
    let send = |secret: &str| {
        client
            .post(&create)
            .bearer_auth(secret)
            .header("content-type", "application/json")
            .body(r#"{"initialStock":1}"#)
            .send()
    };
    assert_eq!(send("dashboard-secret").await.unwrap().status(), 403);
    assert_eq!(send("shop-secret").await.unwrap().status(), 200);
    let read = client
        .get(format!("{base}/v1/aggregates/FlashSaleItem/f1"))
        .bearer_auth("dashboard-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    drop(server);
    db.cleanup().await;
}

/// The command line prints the same, and exits the same, here and through
/// `--server`, for ids a URL must escape. (An id of `..` was recorded here
/// and, through a server, collapsed its URL into another route: 405.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_answers_the_same_here_and_through_a_server() {
    let db = TestDb::sqlite().await;
    let server = TestServer::start(db.default_host().await, ServerConfig::default()).await;
    let (base, url) = (server.base.clone(), db.url.clone());
    let run = move |remote: bool, args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_eshost"));
        command
            .args(args)
            .env("DATABASE_URL", &url)
            .env("ESHOST_MODULES", modules_dir())
            .env_remove("ESHOST_SERVER");
        if remote {
            command.args(["--server", &base]);
        }
        command.output().unwrap()
    };
    let odd = "a/b %2F ü?#&..x";
    let outputs = tokio::task::spawn_blocking(move || {
        let created = run(
            true,
            &[
                "exec",
                "FlashSaleItem",
                odd,
                "CreateFlashSale",
                r#"{"initialStock":2}"#,
            ],
        );
        assert!(created.status.success(), "{created:?}");
        let mut pairs = Vec::new();
        for args in [
            &["state", "FlashSaleItem", odd][..],
            &["events", "FlashSaleItem", odd][..],
            &["state", "FlashSaleItem", "never-made"][..],
            &[
                "exec",
                "FlashSaleItem",
                "..",
                "CreateFlashSale",
                r#"{"initialStock":1}"#,
                "--command-id",
                "dots-1",
            ][..],
            &["state", "FlashSaleItem", "."][..],
        ] {
            pairs.push((args.join(" "), run(false, args), run(true, args)));
        }
        pairs
    })
    .await
    .unwrap();
    for (what, here, there) in outputs {
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).to_string();
        assert_eq!(
            here.status.code(),
            there.status.code(),
            "{what}: {} / {}",
            text(&here.stderr),
            text(&there.stderr)
        );
        assert_eq!(text(&here.stdout), text(&there.stdout), "{what}");
        assert_eq!(text(&here.stderr), text(&there.stderr), "{what}");
    }
    server.stop().await;
    db.cleanup().await;
}
