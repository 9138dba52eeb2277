//! The web console at `/ui/`: plain HTML, CSS and JavaScript from `console/` at the
//! repository's root, embedded in the binary (debug builds too), so that serving it
//! needs no files beside the binary and building it needs nothing but `cargo build`.
//! The console is a client of the public API like any other; it has no routes of its
//! own besides its files. docs/console.md describes its pages.
//!
//! # Security
//!
//! Records hold whatever producers sent, so the console's pages must never run it:
//! every answer under `/ui` carries a Content-Security-Policy that allows scripts,
//! styles and connections from this origin only (no inline script, no `eval`), and
//! the scripts write record data as text, never as markup. Pages may not be framed.

use crate::problem::Problem;
use axum::extract::{Path, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

#[derive(rust_embed::Embed)]
#[folder = "../../console/"]
struct Assets;

/// Where the console lives.
pub const CONSOLE_PATH: &str = "/ui/";

/// The policy of every answer under `/ui`: this origin only, no inline code, no frames.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The content type of a console file, by its extension.
pub fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
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

/// A console file, `304 Not Modified` when the client has this version (by its hash),
/// or a `not-found` problem.
fn file(path: &str, request_headers: &HeaderMap) -> Response {
    let Some(found) = Assets::get(path) else {
        return Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("the console has no file {path:?}"),
        )
        .into_response();
    };
    let etag: String = found
        .metadata
        .sha256_hash()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    let etag = format!("\"{etag}\"");
    let cached = request_headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes());
    let headers = [
        (header::CONTENT_TYPE, content_type(path).to_string()),
        (header::ETAG, etag),
        // Files change with the binary: ask each time, cheaply (304 by the ETag).
        (header::CACHE_CONTROL, "no-cache".to_string()),
    ];
    if cached {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (headers, found.data.into_owned()).into_response()
}

async fn index(headers: HeaderMap) -> Response {
    file("index.html", &headers)
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    file(&path, &headers)
}

/// Adds the headers of the module's `# Security` to an answer.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The console's routes: `/ui/` and its files, `/ui` and `/` sending the browser there.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::temporary(CONSOLE_PATH) }))
        .route("/ui", get(|| async { Redirect::permanent(CONSOLE_PATH) }))
        .route("/ui/", get(index))
        .route("/ui/{*path}", get(asset))
        .route_layer(middleware::from_fn(security_headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_console_file_has_a_known_content_type() {
        let files: Vec<String> = Assets::iter().map(|f| f.to_string()).collect();
        assert!(files.iter().any(|f| f == "index.html"), "{files:?}");
        for f in files {
            assert_ne!(content_type(&f), "application/octet-stream", "{f}");
        }
    }

    #[test]
    fn the_console_has_no_inline_script_or_style() {
        for f in Assets::iter() {
            if !f.ends_with(".html") {
                continue;
            }
            let text = String::from_utf8(Assets::get(&f).unwrap().data.into_owned()).unwrap();
            for tag in text.split('<').skip(1) {
                if let Some(attrs) = tag.strip_prefix("script") {
                    let head = attrs.split('>').next().unwrap_or_default();
                    assert!(head.contains("src="), "{f}: an inline <script>");
                }
                assert!(!tag.starts_with("style"), "{f}: an inline <style>");
                let head = tag.split('>').next().unwrap_or_default();
                assert!(!head.contains(" style="), "{f}: a style attribute");
                assert!(!head.contains(" on"), "{f}: an inline handler in <{head}>");
            }
        }
    }
}
