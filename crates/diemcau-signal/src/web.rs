//! The web client, compiled into the binary (see `build.rs`): `/`, `/chair`, `/site`, `/tech` and `/static/*`.

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;

include!(concat!(env!("OUT_DIR"), "/web_files.rs"));

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

fn file(name: &str) -> Response {
    match FILES.iter().find(|(n, _)| *n == name) {
        Some((n, bytes)) => {
            ([(header::CONTENT_TYPE, content_type(n)), (header::CACHE_CONTROL, "no-cache")], *bytes).into_response()
        }
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(|| async { file("index.html") }))
        .route("/chair", get(|| async { file("chair.html") }))
        .route("/site", get(|| async { file("site.html") }))
        .route("/tech", get(|| async { file("tech.html") }))
        .route("/check", get(|| async { file("check.html") }))
        .route("/static/{name}", get(|Path(name): Path<String>| async move { file(&name) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_embedded() {
        for page in ["index.html", "chair.html", "site.html", "tech.html"] {
            assert!(FILES.iter().any(|(n, b)| *n == page && !b.is_empty()), "{page} missing");
        }
    }
}
