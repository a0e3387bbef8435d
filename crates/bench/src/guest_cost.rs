//! The guest-cost scenario: decide plus evolve per command in the sandbox,
//! with no database.

use crate::{AGGREGATE, BenchError, BenchLine};
use eshost_wasm::{Budget, Hydrated, LoadedComponent, Modules};
use std::sync::Arc;
use std::time::Instant;

/// Decide plus evolve per command, in process (no database): one line.
pub(crate) fn guest_cost(modules: &Modules) -> Result<Vec<BenchLine>, BenchError> {
    const COMMANDS: usize = 20_000;
    let component = modules.get(AGGREGATE).ok_or(BenchError::NoFlashSale)?;
    let mode = match component.limits.budget {
        Budget::WallClock(_) => "epoch",
        Budget::Fuel(_) => "fuel",
    };
    let started = Instant::now();
    let micros = guest_cost_micros(component.clone(), COMMANDS)?;
    let seconds = started.elapsed().as_secs_f64();
    let mut millis: Vec<f64> = micros.iter().map(|us| us / 1000.0).collect();
    millis.sort_by(|a, b| a.total_cmp(b));
    Ok(vec![BenchLine::timed(
        "guest-cost",
        mode,
        COMMANDS,
        seconds,
        &millis,
    )])
}

/// Times `commands` purchases (decide, then apply the event) on one fresh
/// flash-sale instance; microseconds per command, in order.
pub fn guest_cost_micros(
    component: Arc<LoadedComponent>,
    commands: usize,
) -> Result<Vec<f64>, BenchError> {
    let mut item = Hydrated::new(component, "guest-cost")?;
    let create = format!(r#"{{"initialStock":{}}}"#, commands * 2);
    let created = item
        .decide("CreateFlashSale", &create)?
        .map_err(BenchError::Refused)?;
    item.apply_decided(&created)?;
    let mut micros = Vec::with_capacity(commands);
    for n in 0..commands {
        let payload = format!(r#"{{"buyerId":"buyer-{n}","quantity":1}}"#);
        let started = Instant::now();
        let events = item
            .decide("PurchaseItem", &payload)?
            .map_err(BenchError::Refused)?;
        item.apply_decided(&events)?;
        micros.push(started.elapsed().as_secs_f64() * 1e6);
    }
    Ok(micros)
}
