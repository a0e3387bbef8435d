//! The flash-sale aggregate in TypeScript and in Python passes the Rust
//! guest's spec file under `eshost test`.

use crate::util::*;

fn passes_the_flash_sale_spec(language: &Language) {
    let Some(dir) = language.modules_dir() else {
        return;
    };
    let spec = workspace_root().join("examples/flash-sale/tests/flash-sale.spec.toml");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_eshost"))
        .env_remove("DATABASE_URL")
        .env("ESHOST_CACHE_DIR", compiled_code_cache())
        .arg("--modules")
        .arg(dir)
        .arg("test")
        .arg(spec)
        .output()
        .unwrap();
    crate::spec::assert_passed(&output, "9 passed, 0 failed");
}

#[test]
fn the_typescript_guest_passes_the_flash_sale_spec() {
    passes_the_flash_sale_spec(&TYPESCRIPT);
}

#[test]
fn the_python_guest_passes_the_flash_sale_spec() {
    passes_the_flash_sale_spec(&PYTHON);
}
