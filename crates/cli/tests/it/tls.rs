//! `eshost serve` over HTTPS (`--tls-cert`, `--tls-key`), and the command
//! line as its client (`--server https://...`, `--ca-file`).

use crate::serve::refused_start;
use crate::util::*;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The command line runs a command and reads state through a server that
/// serves HTTPS with a certificate a private CA signed, trusting that CA
/// with `--ca-file`. Without it, the certificate is refused with a line
/// that says so, and plain HTTP on the port is not answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_reaches_a_server_over_https_with_its_ca() {
    let db = TestDb::sqlite().await;
    let certificates = TestCertificates::new();
    let cache = tempfile::tempdir().unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_eshost"))
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&certificates.cert)
        .arg("--tls-key")
        .arg(&certificates.key)
        .env("DATABASE_URL", &db.url)
        .env("ESHOST_MODULES", modules_dir())
        .env("ESHOST_CACHE_DIR", cache.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = listening_address(&mut server);
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let plain = base.replacen("https://", "http://", 1);
    let ca = certificates.ca.clone();
    let cli = move |ca_file: bool, args: &[&str]| -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_eshost"));
        command
            .args(args)
            .args(["--server", &base])
            .env_remove("ESHOST_CA_FILE")
            .env_remove("DATABASE_URL");
        if ca_file {
            command.arg("--ca-file").arg(&ca);
        }
        command.output().unwrap()
    };
    let (created, state, untrusted) = tokio::task::spawn_blocking(move || {
        let create = [
            "exec",
            "FlashSaleItem",
            "tls-1",
            "CreateFlashSale",
            r#"{"initialStock":4}"#,
        ];
        (
            cli(true, &create),
            cli(true, &["state", "FlashSaleItem", "tls-1"]),
            cli(false, &["state", "FlashSaleItem", "tls-1"]),
        )
    })
    .await
    .unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).to_string();
    assert!(created.status.success(), "{}", text(&created.stderr));
    assert!(state.status.success(), "{}", text(&state.stderr));
    assert!(text(&state.stdout).contains("4"), "{}", text(&state.stdout));
    assert_eq!(untrusted.status.code(), Some(3), "{untrusted:?}");
    let refusal = text(&untrusted.stderr);
    assert_eq!(refusal.trim().lines().count(), 1, "{refusal}");
    assert!(refusal.contains("certificate"), "{refusal}");
    // Plain HTTP to the TLS port: no HTTP answer.
    let answer = reqwest::Client::new()
        .get(format!("{plain}/healthz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(answer.is_err(), "{answer:?}");
    stop(&mut server);
}

/// A certificate or key file that is missing or is not PEM, or only one
/// of the two, stops `serve` with one line naming the flag and the file.
#[test]
fn bad_tls_files_refuse_to_start() {
    let certificates = TestCertificates::new();
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let (cert, key, garbage) = (
        certificates.cert.to_str().unwrap(),
        certificates.key.to_str().unwrap(),
        garbage.to_str().unwrap(),
    );
    let missing = "/nonexistent/server.pem";
    for (args, expected) in [
        (
            ["--tls-cert", missing, "--tls-key", key],
            "--tls-cert /nonexistent/server.pem",
        ),
        (
            ["--tls-cert", garbage, "--tls-key", key],
            "holds no certificate",
        ),
        (
            ["--tls-cert", cert, "--tls-key", garbage],
            "holds no private key",
        ),
        // A certificate given as its own key.
        (["--tls-cert", cert, "--tls-key", cert], "--tls-key"),
    ] {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend(args);
        let line = refused_start(&all, &[]);
        assert!(line.contains(expected), "{args:?}: {line}");
    }
    // One without the other is a usage error (clap's, exit 2).
    let output = Command::new(env!("CARGO_BIN_EXE_eshost"))
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert", cert])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--tls-key"),
        "{output:?}"
    );
}

fn stop(server: &mut std::process::Child) {
    assert_eq!(terminate(server, Duration::from_secs(20)).code(), Some(0));
}
