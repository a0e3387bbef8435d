//! Loading modules: what is refused, and that the message names the file and
//! the reason in one line.

use eshost_test_support::*;
use eshost_wasm::Runtime;
use std::path::PathBuf;
use wasm_encoder::{ComponentImportSection, ComponentTypeRef, ComponentTypeSection, InstanceType};

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn load_error(name: &str, bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, name, bytes);
    let error = Runtime::new().load(&path).unwrap_err().to_string();
    assert!(
        error.starts_with(&path.display().to_string()),
        "names the file: {error}"
    );
    assert!(!error.contains('\n'), "one line: {error}");
    error
}

#[test]
fn garbage_is_not_a_component() {
    let error = load_error("junk.wasm", b"not wasm at all");
    assert!(error.contains("not a WebAssembly component"), "{error}");
}

#[test]
fn a_core_module_is_not_a_component() {
    let error = load_error("core.wasm", &wasm_encoder::Module::new().finish());
    assert!(error.contains("not a WebAssembly component"), "{error}");
}

#[test]
fn a_component_of_another_world_is_refused() {
    let error = load_error("empty.wasm", &wasm_encoder::Component::new().finish());
    assert!(
        error.contains("not an eshost:aggregate guest (0.1.0, 0.2.0 or 0.3.0)"),
        "{error}"
    );
}

#[test]
fn a_component_that_imports_anything_is_refused_with_its_imports() {
    let mut component = wasm_encoder::Component::new();
    let mut types = ComponentTypeSection::new();
    types.instance(&InstanceType::new());
    component.section(&types);
    let mut imports = ComponentImportSection::new();
    imports.import("wasi:cli/environment@0.2.0", ComponentTypeRef::Instance(0));
    component.section(&imports);
    let error = load_error("greedy.wasm", &component.finish());
    assert!(
        error.contains("imports wasi:cli/environment@0.2.0"),
        "{error}"
    );
    assert!(
        error.contains("may import nothing but eshost:aggregate/host@0.1.0"),
        "{error}"
    );
    // WASI comes from a language toolchain's defaults: the error names the
    // options that turn it off.
    assert!(
        error.contains("disableFeatures") && error.contains("--stub-wasi"),
        "{error}"
    );
}

#[test]
fn the_built_guests_load_and_describe_themselves() {
    let modules = modules();
    let flash_sale = modules.get(FLASH_SALE).unwrap();
    assert_eq!(flash_sale.commands, ["CreateFlashSale", "PurchaseItem"]);
    assert!(flash_sale.events.contains("PurchaseRejected"));
    assert_eq!(flash_sale.digest.len(), 64);
    let names: Vec<_> = modules.names().collect();
    assert_eq!(names, ["BankAccount", "FlashSaleItem"]);
}

/// The same refusal for a real guest, built by the project, that asks for a clock.
#[test]
fn a_built_guest_that_imports_a_clock_is_refused() {
    let path = build_dir().join("fixtures/importer/importer.wasm");
    let error = Runtime::new().load(&path).unwrap_err().to_string();
    assert!(error.contains("importer.wasm"), "{error}");
    assert!(error.contains("imports fixture:importer/clock"), "{error}");
    assert!(
        !error.contains("imports eshost:aggregate/host"),
        "the log import is allowed: {error}"
    );
}

/// A guest whose `describe` never returns is stopped at load by the same
/// budget as a call, and the error names the limit, under either budget.
#[test]
fn a_guest_stuck_at_load_is_stopped_and_the_error_names_the_limit() {
    use eshost_wasm::{Budget, Limits};
    use std::time::{Duration, Instant};
    let path = build_dir().join("fixtures/stuck/stuck.wasm");
    for (budget, limit) in [
        (Budget::WallClock(Duration::from_millis(100)), "time"),
        (Budget::Fuel(10_000_000), "fuel"),
    ] {
        let runtime = Runtime::with_limits(Limits {
            budget,
            ..Limits::default()
        });
        let started = Instant::now();
        let error = runtime.load(&path).unwrap_err().to_string();
        assert!(started.elapsed() < Duration::from_secs(30), "{budget:?}");
        assert!(error.contains("stuck.wasm"), "{error}");
        assert!(error.contains(&format!("{limit} limit")), "{error}");
        assert!(!error.contains('\n') && error.len() < 2048, "{error}");
    }
}

/// With a compiled-code cache, an unchanged component file is not hashed
/// again (its digest is remembered with the file's identity); one changed
/// in place, even to the same size, or replaced, gets its new digest.
#[test]
fn a_remembered_digest_follows_every_change_to_the_file() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let runtime = Runtime::new().with_cache_dir(cache.path());
    let original = std::fs::read(modules_dir().join("flash-sale.wasm")).unwrap();
    let path = dir.path().join("flash-sale.wasm");
    let digest_after = |bytes: &[u8], write: &dyn Fn(&[u8])| {
        write(bytes);
        let loaded = runtime.load(&path).unwrap();
        assert_eq!(loaded.digest, hex::encode(sha2::Sha256::digest(bytes)));
        loaded.digest
    };
    let in_place = |bytes: &[u8]| std::fs::write(&path, bytes).unwrap();
    let renamed = |bytes: &[u8]| drop_in(dir.path(), "flash-sale.wasm", bytes);

    let first = digest_after(&original, &in_place);
    assert_eq!(runtime.load(&path).unwrap().digest, first, "unchanged");
    // Same length, other bytes, same inode.
    let a = digest_after(&new_version(&original, "aaaa"), &in_place);
    let b = digest_after(&new_version(&original, "bbbb"), &in_place);
    let c = digest_after(&new_version(&original, "cccc"), &renamed);
    let distinct: std::collections::HashSet<_> = [&first, &a, &b, &c].into_iter().collect();
    assert_eq!(distinct.len(), 4);
}
