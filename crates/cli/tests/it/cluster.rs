//! Several `eshost serve` processes behind HAProxy on one PostgreSQL, with
//! the reference configuration (`deploy/haproxy.cfg`): routed by aggregate,
//! surviving a host killed mid-run, taking a host added mid-run, following
//! a version deployed through any of them. Callers
//! resend as the book tells clients to (same Idempotency-Key). Every host
//! wants a token, as a deployment serving other machines does: HAProxy's
//! health check sends none.

use crate::util::{FLASH_SALE, TestDb, assert_gapless, create, modules_dir, purchase};
use eshost::{CommandId, CommandRequest, Host};
use eshost_bench::cluster::{Cluster, ClusterConfig, Routing};
use eshost_bench::http::{Answered, Resending};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Every host's token, which every caller sends.
const TOKEN: &str = "cluster-secret";

async fn start(db: &TestDb, hosts: usize, spares: usize) -> Cluster {
    let config = ClusterConfig {
        spares,
        token: Some(TOKEN.into()),
        eshost: env!("CARGO_BIN_EXE_eshost").into(),
        ..ClusterConfig::new(hosts, Routing::ConsistentHash, &db.url, &modules_dir())
    };
    Cluster::start(&config)
        .await
        .unwrap_or_else(|e| panic!("starting the cluster: {e}"))
}

/// Every answer a run got: the request, and its final answer.
type Answers = Vec<(CommandRequest, Result<Answered, String>)>;

/// A run's answers, and how many sends were resends.
struct Run {
    answers: Answers,
    resends: u64,
}

/// Holds the purchases from the `from`th on until `open` is set: so a
/// change made mid-run is made while the load still flows, however fast
/// the machine.
#[derive(Clone)]
struct Gate {
    from: usize,
    open: Arc<std::sync::atomic::AtomicBool>,
}

/// `commands` purchases of one unit, spread round-robin over `items`, from
/// `callers` callers through the cluster, each with its own key.
/// `answered` counts final answers as they come.
async fn purchases(
    proxy: std::net::SocketAddr,
    items: &[String],
    commands: usize,
    callers: usize,
    answered: Arc<AtomicUsize>,
) -> Run {
    gated_purchases(proxy, items, commands, callers, answered, None).await
}

/// [`purchases`], held at `gate` until it opens.
async fn gated_purchases(
    proxy: std::net::SocketAddr,
    items: &[String],
    commands: usize,
    callers: usize,
    answered: Arc<AtomicUsize>,
    gate: Option<Gate>,
) -> Run {
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (next, answered, items) = (next.clone(), answered.clone(), items.to_vec());
            let gate = gate.clone();
            let mut caller = Resending::new(proxy).with_token(Some(TOKEN));
            let run = uuid::Uuid::new_v4().simple().to_string();
            tokio::spawn(async move {
                let mut answers = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= commands {
                        return (answers, caller.resends);
                    }
                    while let Some(gate) = gate.as_ref().filter(|g| n >= g.from) {
                        if gate.open.load(Ordering::Acquire) {
                            break;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    }
                    let mut request = purchase(&items[n % items.len()], &format!("b{n}"), 1);
                    request.command_id = CommandId::chosen(format!("order-{run}-{n}"));
                    let answer = caller.execute(&request).await;
                    answered.fetch_add(1, Ordering::Relaxed);
                    answers.push((request, answer));
                }
            })
        })
        .collect();
    let mut run = Run {
        answers: Vec::new(),
        resends: 0,
    };
    for task in tasks {
        let (answers, resends) = task.await.unwrap();
        run.answers.extend(answers);
        run.resends += resends;
    }
    run
}

/// Creates `count` sales of `stock` through the cluster; their ids.
async fn sales(cluster: &Cluster, prefix: &str, count: usize, stock: u64) -> Vec<String> {
    let mut caller = Resending::new(cluster.address()).with_token(Some(TOKEN));
    let mut ids = Vec::new();
    for n in 0..count {
        let id = format!("{prefix}-{n}");
        caller
            .execute(&create(&id, stock))
            .await
            .unwrap_or_else(|e| panic!("creating {id}: {e}"));
        ids.push(id);
    }
    ids
}

/// Every command answered, once, with success; in the store, each command
/// recorded exactly once, on its own item, every stream gapless, nothing
/// oversold. Returns how many answers were replays of a recorded outcome.
async fn assert_each_recorded_once(
    host: &Host,
    items: &[String],
    stock: u64,
    answers: &Answers,
) -> usize {
    let mut recorded: HashMap<String, (String, usize)> = HashMap::new();
    for item in items {
        let stream = host.events(FLASH_SALE, item).await.unwrap();
        assert_gapless(&stream);
        let sold = stream.iter().filter(|e| e.name == "ItemPurchased").count() as u64;
        assert!(sold <= stock, "{item} oversold: {sold} of {stock}");
        for event in &stream[1..] {
            let id = event.metadata["commandId"].as_str().unwrap().to_string();
            let entry = recorded.entry(id).or_insert((item.clone(), 0));
            assert_eq!(&entry.0, item, "a command recorded on two items");
            entry.1 += 1;
        }
    }
    let mut replays = 0;
    for (request, answer) in answers {
        let id = request.command_id.as_str();
        let answer = answer
            .as_ref()
            .unwrap_or_else(|e| panic!("{id} got no success: {e}"));
        replays += usize::from(answer.replayed);
        let (item, events) = recorded
            .get(id)
            .unwrap_or_else(|| panic!("{id} answered but not recorded"));
        assert_eq!(item, &request.id);
        assert_eq!(*events, 1, "{id} recorded {events} times");
    }
    assert_eq!(recorded.len(), answers.len(), "a command recorded unasked");
    replays
}

/// The reference routing keeps a hot item on one host: its queue batches
/// every purchase, so no host races another (no conflict retries), none
/// fails, nothing is oversold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_routing_serves_a_hot_item_from_one_host() {
    let db = TestDb::postgres().await;
    let cluster = start(&db, 3, 0).await;
    let items = sales(&cluster, "hot", 1, 500).await;
    let answers = purchases(cluster.address(), &items, 1_000, 64, Arc::default())
        .await
        .answers;

    let host = db.default_host().await;
    assert_each_recorded_once(&host, &items, 500, &answers).await;
    let retries: u32 = answers
        .iter()
        .map(|(_, a)| a.as_ref().map_or(0, |a| a.retries))
        .sum();
    assert_eq!(
        retries, 0,
        "conflict retries on a hot item routed to one host"
    );
    let mut serving = Vec::new();
    for n in 1..=3 {
        if cluster.metric(n, "eshost_commands_total").await > 0.0 {
            serving.push(n);
        }
    }
    assert_eq!(serving.len(), 1, "hosts that ran commands: {serving:?}");
    let state = host.state(FLASH_SALE, &items[0]).await.unwrap();
    assert_eq!(state["sold"], 500);
    drop(cluster);
    db.cleanup().await;
}

/// 256 callers at once through HAProxy on one hot item, as the bench's
/// `cluster-hot-item` sends them, each time on a cluster just started (so
/// HAProxy has no connection to the host yet): the run is not
/// latency-bound (the machine under 30% busy while half the commands take
/// over 10 ms), and no connection from HAProxy to the host took the second
/// a dropped handshake waits to be sent again. (HAProxy opens its
/// connections to a host as callers need them: here 256 at once, to the
/// host that owns the item. Its accept queue held 128; the rest waited out
/// a SYN retransmission with the machine idle. That happened in a quarter
/// to a half of the bursts, hence eight: with the old backlog this test
/// failed in three runs of five with four bursts.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_callers_through_haproxy_does_not_stall() {
    const CALLERS: usize = 256;
    const BURSTS: usize = 8;
    let db = TestDb::postgres().await;
    let config = ClusterConfig {
        eshost: env!("CARGO_BIN_EXE_eshost").into(),
        ..ClusterConfig::new(1, Routing::ConsistentHash, &db.url, &modules_dir())
    };
    let host = db.default_host().await;
    for burst in 1..=BURSTS {
        let cluster = Cluster::start(&config)
            .await
            .unwrap_or_else(|e| panic!("starting the cluster: {e}"));
        let line = eshost_bench::purchases_through_cluster(
            &cluster,
            &host,
            (1, 1_000, 2 * CALLERS, CALLERS),
        )
        .await
        .unwrap();
        drop(cluster);
        assert_eq!(line.failed, 0);
        assert!(!line.oversold);
        assert!(line.resends.is_some(), "the callers' resends are counted");
        let connect_max_ms = line.proxy_connect_max_ms.expect("HAProxy's figures");
        assert!(
            connect_max_ms < 1_000.0,
            "burst {burst}: a connection from HAProxy to the host took {connect_max_ms} ms: a handshake was dropped and sent again"
        );
        assert!(
            !line.latency_bound(),
            "burst {burst}: latency-bound: p50 {:.1} ms with the machine {:.0}% busy ({:.0} cmd/s)",
            line.p50_ms,
            line.cpu_busy_share.unwrap_or(0.0) * 100.0,
            line.commands_per_s
        );
    }
    db.cleanup().await;
}

/// One host killed (SIGKILL) in the middle of 5,000 purchases: its
/// aggregates move to the others, callers resend what was lost with the
/// same keys, and every command ends recorded exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_mid_run_loses_no_command() {
    const COMMANDS: usize = 5_000;
    const STOCK: u64 = 200; // 20 items: 4,000 to sell, so some sell out
    let db = TestDb::postgres().await;
    let mut cluster = start(&db, 3, 0).await;
    let items = sales(&cluster, "kill", 20, STOCK).await;
    let answered = Arc::new(AtomicUsize::new(0));
    let run = purchases(cluster.address(), &items, COMMANDS, 64, answered.clone());
    let kill = async {
        while answered.load(Ordering::Relaxed) < COMMANDS / 3 {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let served = cluster.metric(2, "eshost_commands_total").await;
        cluster.kill(2).await.unwrap();
        (answered.load(Ordering::Relaxed), served)
    };
    let (run, (killed_at, served)) = tokio::join!(run, kill);
    let answers = run.answers;
    assert!(
        killed_at < COMMANDS,
        "the host was killed after the run ({killed_at})"
    );
    assert!(served > 0.0, "the killed host had served nothing");

    let host = db.default_host().await;
    let replays = assert_each_recorded_once(&host, &items, STOCK, &answers).await;
    assert_eq!(answers.len(), COMMANDS);
    eprintln!(
        "killed after {killed_at} answers; {} resends; {replays} answers were replays",
        run.resends
    );
    drop(cluster);
    db.cleanup().await;
}

/// A spare host put into rotation mid-run takes over part of the
/// aggregates without a failed command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_added_mid_run_takes_aggregates_without_a_failed_command() {
    const COMMANDS: usize = 3_000;
    let db = TestDb::postgres().await;
    let cluster = start(&db, 2, 1).await;
    let items = sales(&cluster, "join", 30, 1_000).await;
    assert_eq!(cluster.metric(3, "eshost_commands_total").await, 0.0);
    let answered = Arc::new(AtomicUsize::new(0));
    let run = purchases(cluster.address(), &items, COMMANDS, 32, answered.clone());
    let join = async {
        while answered.load(Ordering::Relaxed) < COMMANDS / 3 {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        cluster.enable(3).await.unwrap();
    };
    let (run, ()) = tokio::join!(run, join);
    let answers = run.answers;

    let host = db.default_host().await;
    assert_each_recorded_once(&host, &items, 1_000, &answers).await;
    let joined = cluster.metric(3, "eshost_commands_total").await;
    assert!(joined > 0.0, "the added host ran no command");
    drop(cluster);
    db.cleanup().await;
}

/// The digest each host serves for the flash sale, host 1 first.
async fn digests(cluster: &Cluster, hosts: usize) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut digests = Vec::new();
    for n in 1..=hosts {
        let listed: serde_json::Value = client
            .get(cluster.host_url(n, "/v1/aggregates"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let served = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == FLASH_SALE);
        digests.push(
            served
                .map(|a| a["digest"].as_str().unwrap().to_string())
                .unwrap_or_default(),
        );
    }
    digests
}

/// Under a steady load of purchases through HAProxy, an incompatible
/// version deployed through it is refused and no host changes version;
/// then a compatible one is served by all three hosts within 5 s, and no
/// command fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_reaches_every_host_within_seconds_under_load() {
    const COMMANDS: usize = 24_000;
    let db = TestDb::postgres().await;
    let cluster = start(&db, 3, 0).await;
    let items = sales(&cluster, "deploy", 30, 1_000).await;
    let before = digests(&cluster, 3).await;
    assert!(
        before.iter().all(|d| *d == before[0] && !d.is_empty()),
        "{before:?}"
    );
    let answered = Arc::new(AtomicUsize::new(0));
    // The last sixth waits for the switch: the run cannot end before it.
    let gate = Gate {
        from: COMMANDS * 5 / 6,
        open: Arc::default(),
    };
    let run = gated_purchases(
        cluster.address(),
        &items,
        COMMANDS,
        32,
        answered.clone(),
        Some(gate.clone()),
    );
    let client = reqwest::Client::new();
    let put = |bytes: Vec<u8>| {
        client
            .put(cluster.url("/v1/modules/FlashSaleItem"))
            .bearer_auth(TOKEN)
            .body(bytes)
            .send()
    };
    let deploy = async {
        while answered.load(Ordering::Relaxed) < COMMANDS / 24 {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let renamed =
            std::fs::read(crate::util::upgrade_fixture("flash-sale-renamed.wasm")).unwrap();
        let refused = put(renamed).await.unwrap();
        assert_eq!(refused.status(), 409);
        // Longer than a host takes to follow the store.
        tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
        let after_refusal = digests(&cluster, 3).await;
        let v2 = std::fs::read(crate::util::upgrade_fixture("flash-sale-v2.wasm")).unwrap();
        let started = std::time::Instant::now();
        let answered_before = answered.load(Ordering::Relaxed);
        let deployed = put(v2).await.unwrap();
        assert_eq!(deployed.status(), 200);
        let answer: serde_json::Value = deployed.json().await.unwrap();
        let digest = answer["deployment"]["digest"].as_str().unwrap().to_string();
        loop {
            let now = digests(&cluster, 3).await;
            if now.iter().all(|d| *d == digest) {
                break;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(5),
                "after 5 s: {now:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let took = started.elapsed();
        let during = answered.load(Ordering::Relaxed) - answered_before;
        gate.open.store(true, Ordering::Release);
        println!(
            "every host served the new version {} ms after the PUT was sent; {during} purchases answered meanwhile",
            took.as_millis()
        );
        (after_refusal, during)
    };
    let (run, (after_refusal, during)) = tokio::join!(run, deploy);
    assert_eq!(after_refusal, before, "a refused version changed a host");
    assert!(during > 0, "no purchase was answered during the switch");
    let host = db.default_host().await;
    assert_each_recorded_once(&host, &items, 1_000, &run.answers).await;
    drop(cluster);
    db.cleanup().await;
}

/// The configuration in `deploy/` is one HAProxy accepts as it stands.
#[test]
fn the_reference_configuration_is_valid() {
    let haproxy = ClusterConfig::new(1, Routing::ConsistentHash, "", &modules_dir()).haproxy;
    let checked = std::process::Command::new(&haproxy)
        .args(["-c", "-f"])
        .arg(crate::util::workspace_root().join("deploy/haproxy.cfg"))
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", haproxy.display()));
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}
