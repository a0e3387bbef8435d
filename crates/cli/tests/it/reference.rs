//! The book's reference pages are what the binary prints now: a flag, a
//! route or a field changed without `cargo xtask book` fails here.

use crate::util::*;
use std::process::Command;

fn assert_current(page: &str, file: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_eshost"))
        .args(["reference", page])
        .output()
        .unwrap();
    assert!(output.status.success(), "eshost reference {page} failed");
    let printed = String::from_utf8(output.stdout).unwrap();
    let committed = std::fs::read_to_string(workspace_root().join(file)).unwrap();
    assert!(
        printed == committed,
        "{file} differs from `eshost reference {page}`: run `cargo xtask book` and commit it"
    );
}

#[test]
fn the_command_line_reference_is_current() {
    assert_current("cli", "docs/book/src/reference/cli.md");
}

#[test]
fn the_http_reference_is_current() {
    assert_current("http", "docs/book/src/reference/http-api.md");
}
