//! The cost of personal data (decision record 0056): many-items with the
//! flash sale's buyers encrypted, each under a key of their own, beside the
//! same run on a plain store. Each mode runs on a fresh scratch store, the
//! personal one under a master key made for the run. In `personal` every
//! buyer is new, so every purchase also stores a subject's key: the worst
//! case, and a flash sale's usual one. In `returning`, 1,000 buyers who
//! bought before, more than [`KEY_TTL`] ago, make all the purchases: each
//! one's key is stored, and read again once before it is used.

use crate::purchases::{Buyers, Driver, purchases_by};
use crate::scratch::Scratch;
use crate::{AGGREGATE, BenchError, BenchLine, baseline_inserts, in_order};
use eshost::dispatch::{CommandRequest, Host, HostOptions};
use eshost_personal::{KEY_TTL, Keyring, MasterKey, PersonalStore};
use eshost_store::{EventStore, StoreError};
use eshost_wasm::Modules;
use std::sync::Arc;
use std::time::Duration;

/// (sales, stock, purchases), as many-items.
const MANY_ITEMS: (usize, u64, usize) = (1_000, 10, 20_000);

/// The buyers of the `returning` mode: each makes 20 of the purchases.
const RETURNING_BUYERS: usize = 1_000;

pub(crate) async fn run(
    modules: &Modules,
    url: &str,
    callers: usize,
    reversed: bool,
) -> Result<Vec<BenchLine>, BenchError> {
    let baseline = baseline_inserts(url, callers, Duration::from_secs(2)).await?;
    let (sales, stock, purchases) = MANY_ITEMS;
    let mut lines = Vec::new();
    for mode in in_order(&["plain", "personal", "returning"], reversed) {
        let buyers = match mode {
            "returning" => Buyers::Returning(RETURNING_BUYERS),
            _ => Buyers::EveryPurchaseNew,
        };
        let mut line = Scratch::around(url, async |url| {
            let store = open(&url, mode != "plain").await?;
            let host = Host::with_options(modules.clone(), store, HostOptions::default());
            if let Buyers::Returning(count) = buyers {
                bought_before(&host, count).await?;
            }
            let driver = Driver::InProcess(host.clone());
            let run = (sales, stock, purchases, callers);
            purchases_by(&host, &driver, run, buyers).await
        })
        .await?;
        line.scenario = "personal".to_string();
        line.mode = mode.to_string();
        line.baseline_inserts_per_s = baseline;
        lines.push(line);
    }
    Ok(lines)
}

/// Each of `count` returning buyers (as [`Buyers::Returning`] names them)
/// tries to buy from a sale of its own (one is sold; the rest are
/// rejections, which name the buyer too), and then [`KEY_TTL`] passes:
/// their keys are stored and no longer fresh.
async fn bought_before(host: &Host, count: usize) -> Result<(), BenchError> {
    let sale = format!("before-{}", uuid::Uuid::new_v4().simple());
    let create = serde_json::json!({ "initialStock": 1 }).to_string();
    host.execute(&CommandRequest::new(
        AGGREGATE,
        &sale,
        "CreateFlashSale",
        create,
    ))
    .await?;
    for n in 0..count {
        let buyer = Buyers::Returning(count).of(n);
        let payload = serde_json::json!({ "buyerId": buyer, "quantity": 1 });
        let purchase = CommandRequest::new(AGGREGATE, &sale, "PurchaseItem", payload.to_string());
        host.execute(&purchase).await?;
    }
    tokio::time::sleep(KEY_TTL).await;
    Ok(())
}

/// The store at `url`, encrypting under a new master key if `personal`.
async fn open(url: &str, personal: bool) -> Result<Arc<dyn EventStore>, BenchError> {
    let inner = eshost_store::open(url).await?;
    if !personal {
        return Ok(inner);
    }
    let key = |e: eshost_personal::KeyError| StoreError::PersonalData(e.to_string());
    let master = MasterKey::from_base64(&MasterKey::generate().map_err(key)?).map_err(key)?;
    let store = PersonalStore::open(inner, Keyring::new(master, Vec::new()), Default::default());
    Ok(Arc::new(store.await?))
}
