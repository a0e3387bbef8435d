//! The OpenAPI document of the HTTP API, served at `/v1/openapi.json`.
//!
//! It is generated from the handlers' `#[utoipa::path]` annotations and the
//! answer types' `ToSchema` derives, so it cannot drift from the code. What
//! every operation shares (the bearer token, its 401, and the 403 of a
//! token without the route's scope) is added here once rather than
//! repeated on each handler.

use super::App;
use super::{console, deploy, projections, reactors, routes, subjects};
use axum::Json;
use axum::extract::State;
use eshost_api::{
    AggregateInfo, CommandOutcome, ComponentKind, DeployAction, DeployAnswer, Deployment,
    EventsPage, Health, PROBLEM_JSON, Problem, ProblemType, ProjectionInfo, ProjectionRecord,
    ProjectionStatus, ReactorInfo, Readiness, RecordedEvent, RefusedVersion, ReloadReport,
    StateAnswer, ViewDocument,
};
use std::collections::BTreeSet;
use std::sync::OnceLock;
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "eshost",
        description = "Event-sourced aggregates whose domain logic runs as sandboxed WebAssembly components."
    ),
    paths(
        routes::command,
        routes::aggregates,
        routes::state,
        routes::events,
        routes::follow_events,
        routes::view_document,
        routes::reload,
        subjects::forget,
        deploy::deploy,
        deploy::rollback,
        deploy::history,
        console::stats,
        projections::list,
        projections::rebuild,
        projections::deploy,
        projections::rollback,
        projections::history,
        reactors::list,
        reactors::parked,
        reactors::retry,
        reactors::policy,
        reactors::deploy,
        reactors::rollback,
        reactors::history,
        routes::healthz,
        routes::readyz,
        routes::metrics,
        routes::problem,
        openapi_json,
    ),
    components(schemas(
        CommandOutcome,
        RecordedEvent,
        AggregateInfo,
        RefusedVersion,
        ReloadReport,
        eshost_api::ForgetRequest,
        eshost_api::ForgetAnswer,
        eshost_api::Erasure,
        eshost_api::ErasedStream,
        DeployAnswer,
        ProjectionInfo,
        ReactorInfo,
        Deployment,
        ComponentKind,
        DeployAction,
        crate::history::Sample,
        ProjectionStatus,
        ProjectionRecord,
        eshost_api::ReactorStatus,
        eshost_api::ParkedEvent,
        eshost_api::RetryAnswer,
        eshost_api::ReactorPolicy,
        eshost_core::OnFailure,
        StateAnswer,
        eshost_api::SnapshotInfo,
        EventsPage,
        ViewDocument,
        Readiness,
        Health,
        Problem,
        ProblemType,
    )),
    modifiers(&Access),
)]
struct ApiDoc;

/// The document, built once.
pub fn document() -> &'static Document {
    static DOCUMENT: OnceLock<Document> = OnceLock::new();
    DOCUMENT.get_or_init(ApiDoc::openapi)
}

/// `GET /v1/openapi.json`: the document, with the `aggregate` and `command`
/// path parameters narrowed to what this server has loaded now, so a client
/// generator or a fuzzer sees the real names.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    operation_id = "openapi",
    summary = "This document",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)),
    tag = "operations"
)]
pub async fn openapi_json(State(app): State<App>) -> Json<Document> {
    Json(with_loaded_names(
        document().clone(),
        &app.host.modules().describe(),
    ))
}

/// `document` with the `aggregate` and `command` path parameters listing the
/// loaded names (other names are still answered, with 404).
fn with_loaded_names(mut document: Document, loaded: &[AggregateInfo]) -> Document {
    let aggregates: BTreeSet<&str> = loaded.iter().map(|a| a.name.as_str()).collect();
    let commands: BTreeSet<&str> = loaded
        .iter()
        .flat_map(|a| a.commands.iter().map(String::as_str))
        .collect();
    let one_of = |names: &BTreeSet<&str>| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(names.iter().copied()))
            .build()
    };
    for item in document.paths.paths.values_mut() {
        for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
            for parameter in operation.parameters.iter_mut().flatten() {
                let names = match (&parameter.parameter_in, parameter.name.as_str()) {
                    (ParameterIn::Path, "aggregate") => &aggregates,
                    (ParameterIn::Path, "command") => &commands,
                    _ => continue,
                };
                if !names.is_empty() {
                    parameter.schema = Some(one_of(names).into());
                }
            }
        }
    }
    document
}

/// Adds the bearer token: optional on the server (`--token`), so each
/// operation may be called with it or without; 401 (no known token) and
/// 403 (a token without the route's scope) on every operation. The probes
/// answer them only with `--protect-probes`.
struct Access;

impl Modify for Access {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        let error = |description: &str| -> RefOr<Response> {
            ResponseBuilder::new()
                .description(description)
                .content(
                    PROBLEM_JSON,
                    utoipa::openapi::ContentBuilder::new()
                        .schema(Some(utoipa::openapi::Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build()
                .into()
        };
        for item in doc.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                // With the token, or without it when the server has none.
                operation.security = Some(vec![
                    utoipa::openapi::security::SecurityRequirement::new(
                        "bearer",
                        Vec::<String>::new(),
                    ),
                    utoipa::openapi::security::SecurityRequirement::default(),
                ]);
                let responses = &mut operation.responses.responses;
                responses.insert(
                    "401".to_string(),
                    error(
                        "`unauthorized`: the server has tokens and the request carried none of them",
                    ),
                );
                // The command route's own 403 already names both causes.
                responses.entry("403".to_string()).or_insert_with(|| {
                    error("`forbidden`: the token does not have the scope this route needs")
                });
            }
        }
    }
}
