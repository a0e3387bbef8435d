//! Build helper for the eshost workspace (`cargo xtask ...`).
//!
//! - `build-guests [PACKAGE...]`: compiles this repository's guest crates
//!   (all, or those named) for `wasm32-unknown-unknown` and wraps each core
//!   module into a component in `target/modules/` (projections in
//!   `target/projections/`, test fixtures in `target/fixtures/`); under
//!   `CARGO_TARGET_DIR` when it is set. The TypeScript guests are built with
//!   node and npm into `target/modules-ts/` and `target/reactors-ts/`, the
//!   Python ones with componentize-py into `target/modules-py/` and
//!   `target/reactors-py/`; each is skipped, saying why, where its
//!   toolchain is missing.
//! - `layering`: checks that the crates depend on each other only as the
//!   architecture allows (see [`LAYERING`]); cargo's own graph is the proof.
//! - `test [ARGS]`: `layering`, `build-guests`, installs schemathesis (the
//!   API conformance test runs it) into `target/tools/`, then
//!   `cargo test --workspace [ARGS]`.
//! - `book`: writes the reference pages from the code (`eshost reference`),
//!   builds the book (`docs/book`) with mdBook into `target/book/`,
//!   installing mdBook into `target/tools/` if it is not on PATH, and
//!   fails on a link to a page or an anchor that does not exist.
//! - `demo [ARGS]`: `build-guests`, then `eshost demo flash-sale [ARGS]`.
//!
//! Guests are compiled with `eshost-guest-build` (rustup's wasm32 target, or
//! Debian's compiler building std from source); a guest outside this
//! repository is built with `eshost build`, and made with `eshost new`.

use anyhow::{Context, Result, bail};
use eshost_guest_build::Toolchain;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Guest crates and the component file each one becomes, under `target/`.
/// Aggregate guests go to `modules/` (eshost's default modules directory),
/// projection guests to `projections/` (its default projections directory),
/// reactor guests to `reactors/`; the checkout sample's two aggregates to
/// `checkout/` (its item is a second `FlashSaleItem`);
/// test fixtures to `fixtures/`, where nothing loads them by accident.
const GUESTS: &[(&str, &str)] = &[
    ("guest-flash-sale", "modules/flash-sale.wasm"),
    ("guest-bank-account", "modules/bank-account.wasm"),
    ("guest-sales-summary", "projections/sales-summary.wasm"),
    ("guest-checkout", "reactors/checkout.wasm"),
    ("guest-order", "checkout/order.wasm"),
    ("guest-flash-sale-release", "checkout/flash-sale.wasm"),
    ("guest-hostile", "fixtures/hostile.wasm"),
    ("guest-importer", "fixtures/importer/importer.wasm"),
    ("guest-stuck", "fixtures/stuck/stuck.wasm"),
    ("guest-contract-0-1", "fixtures/contract-0.1/tally.wasm"),
    ("guest-flash-sale-v2", "fixtures/upgrade/flash-sale-v2.wasm"),
    (
        "guest-flash-sale-renamed",
        "fixtures/upgrade/flash-sale-renamed.wasm",
    ),
    (
        "guest-flash-sale-upcast",
        "fixtures/upgrade/flash-sale-upcast.wasm",
    ),
    (
        "guest-checkout-strict",
        "fixtures/reactors/checkout-strict.wasm",
    ),
];

/// A guest in another language: the name `build-guests` knows it by, its
/// directory, and the component it becomes under `target/` (a directory of
/// its own, since each is a second `FlashSaleItem` or `checkout`).
struct OtherGuest {
    name: &'static str,
    dir: &'static str,
    component: &'static str,
}

/// The TypeScript guests: the flash-sale item (a second `FlashSaleItem`)
/// and the checkout reactor (a second `checkout`), each built by its own
/// `build.mjs` with its own toolchain.
const TS_GUESTS: &[OtherGuest] = &[
    OtherGuest {
        name: "guest-flash-sale-ts",
        dir: "examples/flash-sale-ts",
        component: "modules-ts/flash-sale-ts.wasm",
    },
    OtherGuest {
        name: "guest-checkout-ts",
        dir: "examples/checkout/reactor-ts",
        component: "reactors-ts/checkout-ts.wasm",
    },
];

/// The Python guests: the flash-sale item (a third `FlashSaleItem`) and
/// the checkout reactor (a third `checkout`), with the WIT world each is
/// built for and the contract it is in (under `wit/`).
const PY_GUESTS: &[(OtherGuest, &str, &str)] = &[
    (
        OtherGuest {
            name: "guest-flash-sale-py",
            dir: "examples/flash-sale-py",
            component: "modules-py/flash-sale-py.wasm",
        },
        "aggregate-guest",
        "v0.3",
    ),
    (
        OtherGuest {
            name: "guest-checkout-py",
            dir: "examples/checkout/reactor-py",
            component: "reactors-py/checkout-py.wasm",
        },
        "reactor-guest",
        "",
    ),
];

/// The Python SDK, which the Python guest's build puts on its path.
const PY_SDK: &str = "sdk/py";

/// What the Python build reads beside the guest's own directory.
const PY_INPUTS: &[&str] = &["sdk/py/eshost_guest", "wit"];

/// What the TypeScript build reads, beside the guest's own directory: a
/// change to any of them means building again.
const TS_INPUTS: &[&str] = &["sdk/ts/src", "sdk/ts/package.json", "wit"];

fn main() -> std::process::ExitCode {
    match run_task() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_task() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    // `cargo xtask demo -- --json` and `cargo xtask demo --json` mean the same.
    let rest: Vec<String> = args.skip_while(|a| a == "--").collect();
    match task.as_str() {
        "build-guests" => build_guests(&rest).map(|_| ()),
        "layering" => check_layering(),
        "book" => build_book(),
        "test" => {
            // Each phase says how long it took: where a slow run spent it.
            let phase = std::time::Instant::now();
            check_layering()?;
            build_guests(&[])?;
            let schemathesis = schemathesis()?;
            let console = console_suite()?;
            eprintln!(
                "xtask: layering, guests and tools in {:.0} s",
                phase.elapsed().as_secs_f64()
            );
            let mut cargo = cargo();
            cargo
                .args(["test", "--workspace"])
                .args(&rest)
                .env("ESHOST_SCHEMATHESIS", schemathesis);
            // The tests of a guest whose toolchain is missing say they
            // were skipped, rather than fail for a file never built.
            if let Some(why) = missing_node() {
                cargo.env("ESHOST_SKIP_TS_GUEST", why);
            }
            if let Some(why) = missing_python() {
                cargo.env("ESHOST_SKIP_PY_GUEST", why);
            }
            match console {
                Ok(chromium) => cargo.env("ESHOST_CHROMIUM", chromium),
                Err(why) => cargo.env("ESHOST_SKIP_CONSOLE", why),
            };
            run(&mut cargo)
        }
        "demo" => {
            // The demo needs the flash sale only: a newcomer's first run
            // should not wait for every guest and fixture.
            let modules = build_guests(&["guest-flash-sale".into()])?;
            let mut cargo = cargo();
            cargo
                .args([
                    "run",
                    "--quiet",
                    "-p",
                    "eshost-cli",
                    "--",
                    "demo",
                    "flash-sale",
                    "--modules",
                ])
                .arg(modules)
                .args(&rest);
            run(&mut cargo)
        }
        _ => usage(),
    }
}

const USAGE: &str = "\
usage: cargo xtask TASK
  build-guests [PACKAGE...]         this repository's guests (all, or those named); the
                                    TypeScript ones where node and npm are on PATH, the
                                    Python ones where python3 has venv
  layering                          check the crates depend on each other only as allowed
  test [CARGO TEST ARGS]            layering, build-guests, then cargo test --workspace
  book                              the reference pages from the code, then the book
                                    (docs/book) into target/book, its links checked
  demo [DEMO ARGS]                  build-guests, then eshost demo flash-sale
Output goes under CARGO_TARGET_DIR when it is set, else target/.";

fn usage() -> ! {
    eprintln!("{USAGE}");
    std::process::exit(2);
}

/// What a crate, built with some features, must never depend on (its
/// normal dependencies, all the way down): the layering the workspace is
/// built on. A violation is a compile-time fact, so the check reads cargo's
/// own dependency graph.
const LAYERING: &[Layer] = &[
    Layer {
        krate: "eshost-core",
        forbidden: &[
            "eshost-store",
            "eshost-wasm",
            "eshost",
            "eshost-read",
            "eshost-api",
            "sqlx",
            "wasmtime",
        ],
        why: "the shared vocabulary knows neither the store nor the sandbox",
    },
    Layer {
        krate: "eshost-wasm",
        forbidden: &["eshost-store", "sqlx", "eshost", "eshost-read"],
        why: "the sandbox does not know where events are stored",
    },
    Layer {
        krate: "eshost-store",
        forbidden: &["eshost-wasm", "wasmtime", "eshost", "eshost-read"],
        why: "the store does not know the sandbox or the write side",
    },
    Layer {
        krate: "eshost-personal",
        forbidden: &["eshost-wasm", "wasmtime", "eshost", "eshost-read"],
        why: "personal data is the store's concern, below the sandbox and the write side",
    },
    Layer {
        krate: "eshost-testing",
        forbidden: &["eshost-store", "sqlx", "eshost"],
        why: "a guest author's tests run in the sandbox with no database",
    },
    Layer {
        krate: "eshost-read",
        forbidden: &["eshost", "eshost-server"],
        why: "the read side follows the log; it does not run commands",
    },
    Layer {
        krate: "eshost-react",
        forbidden: &["eshost-server"],
        why: "reactions run commands through the host, not through the server",
    },
    Layer {
        krate: "eshost-api",
        forbidden: &[
            "eshost",
            "eshost-store",
            "eshost-wasm",
            "eshost-read",
            "axum",
        ],
        why: "the wire types know nothing of the host or the server",
    },
    Layer {
        krate: "eshost-client",
        forbidden: &[
            "eshost-server",
            "eshost",
            "eshost-store",
            "eshost-wasm",
            "eshost-read",
            "axum",
            "wasmtime",
            "sqlx",
        ],
        why: "the HTTP client does not depend on the server or the host",
    },
    Layer {
        krate: "eshost-guest-build",
        forbidden: &["eshost", "eshost-store", "eshost-wasm", "wasmtime", "sqlx"],
        why: "building a guest needs a compiler and wit-component, not the host",
    },
];

/// No library crate may depend on these: the binary and what only it uses.
const APPLICATIONS: &[&str] = &["eshost-cli", "eshost-bench", "xtask"];

/// The library crates, which [`APPLICATIONS`] may use but not the reverse.
const LIBRARIES: &[&str] = &[
    "eshost-core",
    "eshost-store",
    "eshost-personal",
    "eshost-wasm",
    "eshost",
    "eshost-read",
    "eshost-react",
    "eshost-api",
    "eshost-server",
    "eshost-client",
    "eshost-testing",
    "eshost-guest-build",
];

struct Layer {
    krate: &'static str,
    forbidden: &'static [&'static str],
    why: &'static str,
}

/// Checks [`LAYERING`] and that no library depends on an application;
/// names every violation, with the path cargo would take to it.
fn check_layering() -> Result<()> {
    let mut violations = Vec::new();
    let rules = LAYERING
        .iter()
        .map(|layer| (layer.krate, layer.forbidden, layer.why))
        .chain(LIBRARIES.iter().map(|&krate| {
            (
                krate,
                APPLICATIONS,
                "a library never depends on the command line or the bench",
            )
        }));
    for (krate, forbidden, why) in rules {
        let reached = normal_dependencies(krate)?;
        for name in forbidden {
            if let Some(path) = reached.iter().find(|(dep, _)| dep == name) {
                violations.push(format!("{krate} depends on {name} ({}): {why}", path.1));
            }
        }
    }
    if !violations.is_empty() {
        bail!("the layering is broken:\n  {}", violations.join("\n  "));
    }
    eprintln!("xtask: layering holds ({} crates checked)", LIBRARIES.len());
    Ok(())
}

/// Every package `krate` reaches through normal dependencies, each with
/// the chain of packages that leads to it (`a -> b -> c`).
fn normal_dependencies(krate: &str) -> Result<Vec<(String, String)>> {
    let mut tree = cargo();
    tree.args(["tree", "--quiet", "--edges", "normal", "--prefix", "depth"])
        .args(["--format", "{p}", "--package", krate]);
    let output = tree
        .output()
        .with_context(|| format!("running cargo tree -p {krate}"))?;
    if !output.status.success() {
        bail!(
            "cargo tree -p {krate}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    // Lines are `DEPTHname vX.Y.Z (...)`: the chain to a package is the
    // last package seen at each shallower depth.
    let mut chain: Vec<String> = Vec::new();
    let mut reached = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let digits = line.chars().take_while(char::is_ascii_digit).count();
        let Ok(depth) = line[..digits].parse::<usize>() else {
            continue;
        };
        let name = line[digits..]
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        chain.truncate(depth);
        chain.push(name.clone());
        if depth > 0 {
            reached.push((name, chain.join(" -> ")));
        }
    }
    Ok(reached)
}

/// The mdBook the book is built with, from crates.io when it is not on
/// PATH (search only: no server, no file watcher to compile).
const MDBOOK: &str = "0.5.4";

/// The book's reference pages, each what `eshost reference PAGE` prints.
const REFERENCE_PAGES: &[(&str, &str)] = &[
    ("cli", "docs/book/src/reference/cli.md"),
    ("http", "docs/book/src/reference/http-api.md"),
];

/// `cargo xtask book`.
fn build_book() -> Result<()> {
    let root = workspace_root();
    // Built as `cargo xtask test` builds it (features unified over the
    // whole workspace's tests), so after the tests this builds nothing.
    run(cargo().args(["test", "--quiet", "--workspace", "--no-run"]))?;
    let eshost = target_root().join("debug/eshost");
    for (page, file) in REFERENCE_PAGES {
        let output = Command::new(&eshost)
            .args(["reference", page])
            .output()
            .with_context(|| format!("running {}", eshost.display()))?;
        if !output.status.success() {
            bail!(
                "eshost reference {page}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        std::fs::write(root.join(file), &output.stdout)?;
    }
    let dest = target_root().join("book");
    run(Command::new(mdbook()?)
        .arg("build")
        .arg(root.join("docs/book"))
        .arg("--dest-dir")
        .arg(&dest))
    .context("mdbook build")?;
    check_links(&dest)?;
    eprintln!("book -> {}", dest.join("index.html").display());
    Ok(())
}

/// `mdbook` from PATH, else the one installed under `target/tools/`
/// (installing it the first time).
fn mdbook() -> Result<PathBuf> {
    let on_path = Command::new("mdbook")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if on_path {
        return Ok(PathBuf::from("mdbook"));
    }
    let tools = target_root().join("tools/mdbook");
    let installed = tools.join("bin/mdbook");
    if !installed.exists() {
        eprintln!("xtask: installing mdbook {MDBOOK} into {}", tools.display());
        run(
            Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args([
                    "install",
                    "--quiet",
                    "--locked",
                    "mdbook",
                    "--version",
                    MDBOOK,
                ])
                .args(["--no-default-features", "--features", "search", "--root"])
                .arg(&tools),
        )
        .context("cargo install mdbook")?;
    }
    Ok(installed)
}

/// Every `href` and `src` in the built book that points inside it must name
/// a file that exists and, with a `#fragment`, an element with that id.
fn check_links(dest: &Path) -> Result<()> {
    let mut pages = Vec::new();
    html_files(dest, &mut pages)?;
    let mut broken = Vec::new();
    let mut ids: std::collections::HashMap<PathBuf, Vec<String>> = Default::default();
    for page in &pages {
        let html = std::fs::read_to_string(page)?;
        for link in attribute_values(&html, &["href=\"", "src=\""]) {
            // A link from the site's root (mdBook's 404 page) depends on
            // where the book is served; every other link is relative.
            if link.is_empty()
                || link.starts_with('/')
                || link.contains("://")
                || link.starts_with("mailto:")
                || link.starts_with("javascript:")
                || link.starts_with("data:")
            {
                continue;
            }
            let link = link.split('?').next().unwrap_or_default();
            let (file, fragment) = match link.split_once('#') {
                Some((file, fragment)) => (file, Some(fragment)),
                None => (link, None),
            };
            let target = if file.is_empty() {
                page.clone()
            } else {
                let target = page.parent().unwrap_or(dest).join(file);
                if file.ends_with('/') {
                    target.join("index.html")
                } else {
                    target
                }
            };
            let Ok(target) = target.canonicalize() else {
                broken.push(format!("{}: {link} (no such file)", shown(dest, page)));
                continue;
            };
            if let Some(fragment) = fragment.filter(|f| !f.is_empty()) {
                if !ids.contains_key(&target) {
                    let text = std::fs::read_to_string(&target).unwrap_or_default();
                    ids.insert(target.clone(), attribute_values(&text, &["id=\""]));
                }
                if !ids[&target].iter().any(|id| id == fragment) {
                    broken.push(format!("{}: {link} (no such anchor)", shown(dest, page)));
                }
            }
        }
    }
    if broken.is_empty() {
        eprintln!("xtask: every link of {} pages resolves", pages.len());
        return Ok(());
    }
    broken.sort();
    broken.dedup();
    bail!("broken links in the book:\n  {}", broken.join("\n  "))
}

fn shown(dest: &Path, page: &Path) -> String {
    page.strip_prefix(dest)
        .unwrap_or(page)
        .display()
        .to_string()
}

/// The `.html` files under `dir`.
fn html_files(dir: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            html_files(&path, found)?;
        } else if path.extension().is_some_and(|e| e == "html") {
            found.push(path);
        }
    }
    Ok(())
}

/// The values of the attributes that start with one of `prefixes` (such as
/// `href="`), as written (mdBook writes `&` in links as `&amp;`).
fn attribute_values(html: &str, prefixes: &[&str]) -> Vec<String> {
    let mut values = Vec::new();
    for prefix in prefixes {
        let mut rest = html;
        while let Some(at) = rest.find(prefix) {
            // ` href="` and `<a href="`, not `data-href="`.
            let preceded = rest[..at].chars().last().is_none_or(|c| c.is_whitespace());
            rest = &rest[at + prefix.len()..];
            let end = rest.find('"').unwrap_or(rest.len());
            if preceded {
                values.push(rest[..end].replace("&amp;", "&"));
            }
            rest = &rest[end..];
        }
    }
    values
}

/// The schemathesis version the API conformance test runs, from PyPI.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// Installs schemathesis into its own virtual environment under
/// `target/tools/` (once; kept between runs) and returns its executable.
fn schemathesis() -> Result<PathBuf> {
    Ok(python_tool("schemathesis", &[SCHEMATHESIS.to_string()])?.join("schemathesis"))
}

/// A Python tool in a virtual environment of its own, `target/tools/NAME`,
/// installed by pip from pinned `requirements` once and kept while they
/// are unchanged. Returns the environment's `bin/` directory.
fn python_tool(name: &str, requirements: &[String]) -> Result<PathBuf> {
    let venv = workspace_root().join("target/tools").join(name);
    let bin = venv.join("bin");
    let stamp = venv.join("installed");
    let wanted = requirements.join("\n");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) && bin.join("pip").exists() {
        return Ok(bin);
    }
    eprintln!(
        "xtask: installing {} into {}",
        requirements.join(" "),
        venv.display()
    );
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
        .context("python3 -m venv (Debian: apt-get install python3-venv)")?;
    run(Command::new(bin.join("pip"))
        .args(["install", "--quiet"])
        .args(requirements))?;
    std::fs::write(&stamp, wanted)?;
    Ok(bin)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        // The child has said what went wrong; pass its exit code on.
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}

/// Where cargo puts what it builds: `CARGO_TARGET_DIR` if set (relative to
/// the directory xtask was started in, as cargo reads it), else `target/`.
fn target_root() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => std::env::current_dir()
            .map(|cwd| cwd.join(&dir))
            .unwrap_or_else(|_| PathBuf::from(dir)),
        _ => workspace_root().join("target"),
    }
}

/// Builds this repository's guests (all, or those named) and returns the
/// modules directory holding the components.
fn build_guests(only: &[String]) -> Result<PathBuf> {
    let chosen: Vec<&(&str, &str)> = GUESTS
        .iter()
        .filter(|(package, _)| only.is_empty() || only.iter().any(|o| o == package))
        .collect();
    let other_languages: Vec<&str> = TS_GUESTS
        .iter()
        .map(|g| g.name)
        .chain(PY_GUESTS.iter().map(|(g, ..)| g.name))
        .collect();
    let known = |name: &String| {
        other_languages.contains(&name.as_str()) || GUESTS.iter().any(|(p, _)| p == name)
    };
    if let Some(unknown) = only.iter().find(|o| !known(o)) {
        let mut names: Vec<&str> = GUESTS.iter().map(|(p, _)| *p).collect();
        names.extend(&other_languages);
        bail!("no guest {unknown:?} here (guests: {})", names.join(", "));
    }
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    for guest in TS_GUESTS.iter().filter(|g| wanted(g.name)) {
        build_ts_guest(guest)?;
    }
    for (guest, world, wit) in PY_GUESTS.iter().filter(|(g, ..)| wanted(g.name)) {
        build_py_guest(guest, world, wit)?;
    }
    if !only.is_empty() && chosen.is_empty() {
        return Ok(target_root().join("modules"));
    }
    // The repository's guests are this workspace's members, with names of
    // their own: they share its target directory.
    let (mut cargo, release) = Toolchain::detect()?.cargo_build(&target_root());
    cargo.current_dir(workspace_root());
    for (package, _) in &chosen {
        cargo.args(["-p", package]);
    }
    run(&mut cargo).context("building the guest crates")?;
    for (package, component_path) in chosen {
        let core = release.join(format!("{}.wasm", package.replace('-', "_")));
        let out = target_root().join(component_path);
        eshost_guest_build::wrap(package, &core, &out)?;
        eprintln!("guest {package} -> {}", out.display());
    }
    Ok(target_root().join("modules"))
}

/// Why the TypeScript guest cannot be built here, if it cannot.
fn missing_node() -> Option<String> {
    ["node", "npm"]
        .iter()
        .find(|tool| {
            !Command::new(tool)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|tool| {
            format!("{tool} is not on PATH (Node.js 20 or later builds the TypeScript guest)")
        })
}

/// The console's browser suite: its npm packages installed (`npm ci` from
/// its lockfile when that changed), and the Chromium it drives; or why it
/// cannot run here (Debian: apt-get install chromium).
fn console_suite() -> Result<Result<PathBuf, String>> {
    if let Some(why) = missing_node() {
        return Ok(Err(why));
    }
    // Playwright wants the executable's path, not a name to look up.
    let on_path = |name: &str| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    };
    let chromium = std::env::var_os("ESHOST_CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            ["chromium", "chromium-browser", "google-chrome"]
                .iter()
                .filter_map(|name| on_path(name)),
        )
        .find(|browser| {
            Command::new(browser)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    let Some(chromium) = chromium else {
        return Ok(Err(
            "no Chromium on PATH (Debian: apt-get install chromium)".into(),
        ));
    };
    let dir = workspace_root().join(CONSOLE_SUITE);
    let lockfile = dir.join("package-lock.json");
    let installed = dir.join("node_modules/.package-lock.json");
    if newest_change(&lockfile)? > newest_change(&installed).unwrap_or(std::time::UNIX_EPOCH) {
        let mut npm = Command::new("npm");
        npm.args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir);
        run(&mut npm).context("the console suite: npm ci")?;
    }
    Ok(Ok(chromium))
}

/// The console's browser suite (playwright-core, from npm).
const CONSOLE_SUITE: &str = "crates/cli/tests/console";

/// Why the Python guest cannot be built here, if it cannot.
fn missing_python() -> Option<String> {
    let venv = Command::new("python3")
        .args(["-c", "import venv, ensurepip"])
        .output();
    match venv {
        Ok(output) if output.status.success() => None,
        _ => Some("python3 with venv is not on PATH (Debian: apt-get install python3-venv)".into()),
    }
}

/// Builds a Python guest for `world` of the contract in `wit/{wit}` with
/// componentize-py (pinned in its
/// `requirements.txt`, installed into `target/tools/componentize-py`),
/// with WASI stubbed out, unless its component is newer than every input.
/// Without python3 and venv it says so and skips it.
fn build_py_guest(guest: &OtherGuest, world: &str, wit: &str) -> Result<()> {
    let &OtherGuest {
        name,
        dir,
        component,
    } = guest;
    if let Some(why) = missing_python() {
        eprintln!("guest {name} skipped: {why}");
        return Ok(());
    }
    let root = workspace_root();
    let dir = root.join(dir);
    let requirements: Vec<String> = std::fs::read_to_string(dir.join("requirements.txt"))
        .with_context(|| format!("{name}: reading requirements.txt"))?
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(String::from)
        .collect();
    let tools = python_tool("componentize-py", &requirements)?;
    let out = target_root().join(component);
    if is_stale(
        &out,
        &[&[dir.clone()][..], &inputs(&root, PY_INPUTS)].concat(),
    )? {
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut build = Command::new(tools.join("componentize-py"));
        build
            .arg("-d")
            .arg(root.join("wit").join(wit))
            .args(["-w", world, "componentize", "app", "-p"])
            .arg(&dir)
            .arg("-p")
            .arg(root.join(PY_SDK))
            .args(["--stub-wasi", "-o"])
            .arg(&out)
            // No __pycache__ in the sources: it would make them look newer.
            .env("PYTHONDONTWRITEBYTECODE", "1");
        run(&mut build).with_context(|| format!("{name}: componentize-py"))?;
    }
    eprintln!("guest {name} -> {}", out.display());
    Ok(())
}

/// `names` under `root`.
fn inputs(root: &Path, names: &[&str]) -> Vec<PathBuf> {
    names.iter().map(|name| root.join(name)).collect()
}

/// Whether `out` is missing or older than any of `inputs`.
fn is_stale(out: &Path, inputs: &[PathBuf]) -> Result<bool> {
    let mut newest = std::time::UNIX_EPOCH;
    for input in inputs {
        newest = newest.max(newest_change(input)?);
    }
    Ok(newest_change(out).unwrap_or(std::time::UNIX_EPOCH) <= newest)
}

/// Builds a TypeScript guest with its own toolchain (`npm ci` from its
/// lockfile when that changed, then its `build.mjs`: tsc, esbuild,
/// componentize-js), unless its component is newer than every input.
/// Without node and npm it says so and skips it.
fn build_ts_guest(guest: &OtherGuest) -> Result<()> {
    let &OtherGuest {
        name,
        dir,
        component,
    } = guest;
    if let Some(why) = missing_node() {
        eprintln!("guest {name} skipped: {why}");
        return Ok(());
    }
    let root = workspace_root();
    let dir = root.join(dir);
    let lockfile = dir.join("package-lock.json");
    let installed = dir.join("node_modules/.package-lock.json");
    if newest_change(&lockfile)? > newest_change(&installed).unwrap_or(std::time::UNIX_EPOCH) {
        let mut npm = Command::new("npm");
        npm.args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir);
        run(&mut npm).with_context(|| format!("{name}: npm ci"))?;
    }
    let out = target_root().join(component);
    let own = [dir.join("src"), dir.join("build.mjs"), lockfile];
    if is_stale(&out, &[&own[..], &inputs(&root, TS_INPUTS)].concat())? {
        let mut node = Command::new("node");
        node.arg(dir.join("build.mjs")).arg(&out);
        run(&mut node).with_context(|| format!("{name}: node build.mjs"))?;
    }
    eprintln!("guest {name} -> {}", out.display());
    Ok(())
}

/// The latest modification time of `path`, or of any file under it.
fn newest_change(path: &Path) -> Result<std::time::SystemTime> {
    let metadata =
        std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let mut newest = metadata.modified()?;
    if metadata.is_dir() {
        for entry in std::fs::read_dir(path)? {
            newest = newest.max(newest_change(&entry?.path())?);
        }
    }
    Ok(newest)
}
