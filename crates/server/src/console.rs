//! The operator console at `/console`: a page, a script and a style sheet,
//! embedded in the binary (no CDN; it works offline), over the server's
//! own HTTP API with the operator's token. The assets hold no data, so
//! they are served without a token; every call the page makes needs the
//! scope its route needs, as any client's does.

use crate::App;
use crate::error::ApiError;
use crate::history::Sample;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// Each asset: its name under `/console/`, its media type, its bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../console/index.html"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../console/console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("../console/console.css"),
    ),
];

/// What the page may load and call: only this server.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The assets' total size, in bytes.
pub fn size() -> usize {
    ASSETS.iter().map(|(_, _, bytes)| bytes.len()).sum()
}

/// `GET /console`: the page.
pub async fn page() -> Response {
    asset_named("index.html")
}

/// `GET /console/{file}`: an asset.
pub async fn asset(Path(file): Path<String>) -> Response {
    asset_named(&file)
}

fn asset_named(file: &str) -> Response {
    let Some((_, media_type, bytes)) = ASSETS.iter().find(|(name, _, _)| *name == file) else {
        return ApiError::not_found("no such file in the console").into_response();
    };
    let mut response = (*bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    // Served with the binary: a new one may bring new assets.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `GET /v1/stats`: the last 15 minutes of this server's work.
#[utoipa::path(
    get,
    path = "/v1/stats",
    operation_id = "stats",
    summary = "This server's last 15 minutes, one sample every 10 s, oldest first",
    responses((status = 200, description = "Commands per second, latency, commit size and guest time", body = Vec<Sample>)),
    tag = "operations"
)]
pub async fn stats(State(app): State<App>) -> Json<Vec<Sample>> {
    Json(app.history.samples())
}
