//! `eshost test`: given/when/then spec files run against guests in the
//! sandbox, with no database.

use crate::args::GlobalArgs;
use anyhow::{Result, bail};
use clap::Args;
use eshost_testing::projection::{ProjectionSpecFile, run_projection_case};
use eshost_testing::reactor::{ReactorSpecFile, run_reactor_case};
use eshost_testing::{SpecErrors, SpecFile, run_case};
use eshost_wasm::Modules;
use std::path::PathBuf;
use std::sync::Arc;

/// Run given/when/then spec files against guests (aggregates, or
/// projections and reactors: given/then) in the sandbox, with no database. Prints each
/// case as ok or FAIL (with a diff), then `N passed, M failed`; exits 1 if
/// any case failed, 2 if a spec file could not be used (reported on stderr;
/// the other files still run).
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  eshost test examples/flash-sale/tests/flash-sale.spec.toml\n\n\
    A spec file (TOML) names an aggregate and lists cases:\n  \
    aggregate = \"FlashSaleItem\"\n  \
    [[case]]\n  \
    name = \"quantity 0 is refused\"\n  \
    given = [{ event = \"FlashSaleCreated\", payload = { itemId = \"test-1\", initialStock = 5 } }]\n  \
    when = { command = \"PurchaseItem\", payload = { buyerId = \"b\", quantity = 0 } }\n  \
    error = \"invalid-command\"    # or: then = [{ event = ..., payload = ... }], state = { ... }\n\n\
    A projection's spec names the projection (from --projections); given events, then\n\
    the view's documents (exactly these), or an error the failing event's must contain:\n  \
    projection = \"sales-summary\"\n  \
    [[case]]\n  \
    name = \"a purchase counts\"\n  \
    given = [{ id = \"s1\", event = \"FlashSaleCreated\", payload = { itemId = \"s1\", initialStock = 5 } }]\n  \
    then = { \"item:s1\" = { stock = 5, ... }, total = { ... } }\n\n\
    A reactor's spec names the reactor (from --reactors); given one event (with its\n\
    metadata), then exactly these actions, in order, or an error its refusal must contain:\n  \
    reactor = \"checkout\"\n  \
    [[case]]\n  \
    name = \"a purchase reserves its order\"\n  \
    given = { aggregate = \"FlashSaleItem\", id = \"s1\", event = \"ItemPurchased\", payload = { ... }, metadata = { correlationId = \"order:o1\" } }\n  \
    then = [{ send = { aggregate = \"Order\", id = \"o1\", command = \"ReserveOrder\", payload = {}, correlation_id = \"order:o1\" } }]"
)]
pub struct TestArgs {
    /// Spec files (TOML).
    #[arg(required = true)]
    specs: Vec<PathBuf>,
}

pub fn run(global: &GlobalArgs, args: TestArgs) -> Result<()> {
    test_specs(global, &args.specs)
}

/// A spec file, with the component its cases run against.
enum LoadedSpec {
    Aggregate(SpecFile, Arc<eshost_wasm::LoadedComponent>),
    Projection(ProjectionSpecFile, Arc<eshost_wasm::LoadedProjection>),
    Reactor(ReactorSpecFile, Arc<eshost_wasm::LoadedReactor>),
}

impl LoadedSpec {
    /// Each case's name and, if it failed, why.
    fn run(&self) -> Vec<(&str, Option<String>)> {
        match self {
            Self::Aggregate(spec, component) => spec
                .cases
                .iter()
                .map(|case| (case.name.as_str(), run_case(component, case)))
                .collect(),
            Self::Projection(spec, component) => spec
                .cases
                .iter()
                .map(|case| (case.name.as_str(), run_projection_case(component, case)))
                .collect(),
            Self::Reactor(spec, component) => spec
                .cases
                .iter()
                .map(|case| (case.name.as_str(), run_reactor_case(component, case)))
                .collect(),
        }
    }
}

/// The components spec files run against, each kind loaded when a spec
/// first needs it.
struct Components<'a> {
    global: &'a GlobalArgs,
    runtime: eshost_wasm::Runtime,
    modules: Option<Modules>,
    projections: Option<Vec<Arc<eshost_wasm::LoadedProjection>>>,
    reactors: Option<Vec<Arc<eshost_wasm::LoadedReactor>>>,
}

impl Components<'_> {
    /// A spec file with its component, or why it cannot be used (one or
    /// more lines).
    fn load(&mut self, path: &PathBuf) -> std::result::Result<LoadedSpec, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
        let table = text.parse::<toml::Table>().unwrap_or_default();
        if table.contains_key("reactor") {
            let spec = ReactorSpecFile::parse(&text)?;
            let component = self.reactor(&spec.reactor)?;
            return Ok(LoadedSpec::Reactor(spec, component));
        }
        if table.contains_key("projection") {
            let spec = ProjectionSpecFile::parse(&text)?;
            let component = self.projection(&spec.projection)?;
            return Ok(LoadedSpec::Projection(spec, component));
        }
        let spec = SpecFile::parse(&text)?;
        let component = self.aggregate(&spec.aggregate)?;
        Ok(LoadedSpec::Aggregate(spec, component))
    }

    fn aggregate(
        &mut self,
        name: &str,
    ) -> std::result::Result<Arc<eshost_wasm::LoadedComponent>, String> {
        let loaded = match &mut self.modules {
            Some(loaded) => loaded,
            None => self.modules.insert(
                self.global
                    .modules_with(&self.runtime)
                    .map_err(|e| format!("{e:#}"))?,
            ),
        };
        loaded.get(name).cloned().ok_or_else(|| {
            format!(
                "unknown aggregate {name:?} (loaded: {})",
                loaded.names().collect::<Vec<_>>().join(", ")
            )
        })
    }

    fn projection(
        &mut self,
        name: &str,
    ) -> std::result::Result<Arc<eshost_wasm::LoadedProjection>, String> {
        let dir = &self.global.projections;
        let loaded = match &mut self.projections {
            Some(loaded) => loaded,
            None => self.projections.insert(
                self.runtime
                    .load_projections(dir)
                    .map_err(|e| e.to_string())?,
            ),
        };
        loaded
            .iter()
            .find(|p| p.name == name)
            .cloned()
            .ok_or_else(|| {
                let names: Vec<&str> = loaded.iter().map(|p| p.name.as_str()).collect();
                format!(
                    "unknown projection {name:?} (loaded from {}: {})",
                    dir.display(),
                    names.join(", ")
                )
            })
    }

    fn reactor(
        &mut self,
        name: &str,
    ) -> std::result::Result<Arc<eshost_wasm::LoadedReactor>, String> {
        let dir = &self.global.reactors;
        let loaded = match &mut self.reactors {
            Some(loaded) => loaded,
            None => self
                .reactors
                .insert(self.runtime.load_reactors(dir).map_err(|e| e.to_string())?),
        };
        loaded
            .iter()
            .find(|r| r.name == name)
            .cloned()
            .ok_or_else(|| {
                let names: Vec<&str> = loaded.iter().map(|r| r.name.as_str()).collect();
                format!(
                    "unknown reactor {name:?} (loaded from {}: {})",
                    dir.display(),
                    names.join(", ")
                )
            })
    }
}

fn test_specs(global: &GlobalArgs, specs: &[PathBuf]) -> Result<()> {
    let mut components = Components {
        global,
        runtime: global.runtime(),
        modules: None,
        projections: None,
        reactors: None,
    };
    let (mut passed, mut failed, mut broken) = (0, 0, 0);
    for path in specs {
        // A file that cannot be used is reported and skipped: the others
        // still run.
        let spec = match components.load(path) {
            Ok(loaded) => loaded,
            Err(why) => {
                broken += 1;
                eprintln!("{}: spec error:", path.display());
                for line in why.lines() {
                    eprintln!("  {line}");
                }
                continue;
            }
        };
        println!("{}", path.display());
        for (name, failure) in spec.run() {
            match failure {
                None => {
                    passed += 1;
                    println!("  ok    {name}");
                }
                Some(failure) => {
                    failed += 1;
                    println!("  FAIL  {name}");
                    for line in failure.lines() {
                        println!("        {line}");
                    }
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if broken > 0 {
        return Err(SpecErrors {
            broken,
            files: specs.len(),
        }
        .into());
    }
    if failed > 0 {
        bail!("{failed} of {} cases failed", passed + failed);
    }
    Ok(())
}
