//! The web front end (`player/`, built by Vite to `player/dist`): `/`, `/room/{room}` and
//! `/watch/{app}/{stream}` answer its `index.html` (the page routes itself), `/assets/{file}` its hashed files. Without a
//! build, those pages say how to make one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::respond::plain;

/// Where the built front end is.
pub struct Pages {
    pub dir: PathBuf,
}

type St = Arc<Pages>;

pub fn routes(pages: Pages) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/room/{room}", get(index))
        .route("/watch/{app}/{stream}", get(index))
        .route("/assets/{file}", get(asset))
        .route("/favicon.svg", get(favicon))
        .with_state(Arc::new(pages))
}

/// The page shown when the front end was not built.
const NOT_BUILT: &str = "<!doctype html><meta charset=utf-8><meta name=viewport content=\"width=device-width\">\
<title>streamgate</title><h1>streamgate</h1><p>The web pages (room, watch) are not built. Build them with \
<code>make run</code>, or <code>cd player &amp;&amp; npm ci &amp;&amp; npm run build</code>, then reload.</p>\
<p>Meanwhile: <a href=\"/streams\">live streams</a> · <a href=\"/api/v1/streams\">/api/v1/streams</a> · \
<a href=\"/metrics\">/metrics</a></p>";

async fn index(State(p): State<St>) -> Response {
    match tokio::fs::read(p.dir.join("index.html")).await {
        Ok(body) => with_type(body, "text/html; charset=utf-8", "no-cache"),
        Err(_) => with_type(NOT_BUILT.as_bytes().to_vec(), "text/html; charset=utf-8", "no-cache"),
    }
}

async fn favicon(State(p): State<St>) -> Response {
    file(&p.dir, "favicon.svg", "no-cache").await
}

async fn asset(State(p): State<St>, UrlPath(name): UrlPath<String>) -> Response {
    // Vite's file names carry their content hash: they never change.
    file(&p.dir.join("assets"), &name, "public, max-age=31536000, immutable").await
}

/// A file of `dir` by its plain name (no path: `/`, `\` and leading dots are refused).
async fn file(dir: &Path, name: &str, cache: &'static str) -> Response {
    let Some(ctype) = content_type(name) else {
        return plain(StatusCode::NOT_FOUND, "no such file");
    };
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\', '\0']) {
        return plain(StatusCode::NOT_FOUND, "no such file");
    }
    match tokio::fs::read(dir.join(name)).await {
        Ok(body) => with_type(body, ctype, cache),
        Err(_) => plain(StatusCode::NOT_FOUND, "no such file"),
    }
}

/// The type of the files Vite writes; others are not served.
fn content_type(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1;
    Some(match ext {
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "html" => "text/html; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "woff2" => "font/woff2",
        "json" => "application/json",
        "wasm" => "application/wasm",
        _ => return None,
    })
}

fn with_type(body: Vec<u8>, ctype: &'static str, cache: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_by_plain_name_only() {
        let dir = std::env::temp_dir().join(format!("sg-pages-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("assets")).unwrap();
        std::fs::write(dir.join("assets/app-1.js"), "x").unwrap();
        std::fs::write(dir.join("secret.js"), "s").unwrap();
        let assets = dir.join("assets");
        assert_eq!(file(&assets, "app-1.js", "c").await.status(), StatusCode::OK);
        for bad in ["../secret.js", "..\\secret.js", ".hidden.js", "app-1.exe", "", "a/../../secret.js"] {
            assert_eq!(file(&assets, bad, "c").await.status(), StatusCode::NOT_FOUND, "{bad:?}");
        }
        let r = file(&assets, "app-1.js", "c").await;
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
