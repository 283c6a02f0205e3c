//! The web UI (console, image studio, avatar) at `/`: the files of `ui/dist`, embedded in
//! the binary at compile time (see `build.rs`), or, when the binary was built without them,
//! a page saying how to build them.
//!
//! What the UI's files are allowed, and why:
//! - They are the same bytes for everyone, compiled into the binary, and carry no data and
//!   no secret: like `/openapi.json`, they are served without a key, so that a browser
//!   (which cannot put a key on a page load) can load the page that asks for one. Every
//!   piece of data the page shows comes from the API, with the key.
//! - A strict Content-Security-Policy: scripts, styles, fonts and connections from this
//!   origin only (no inline script or style, no `eval`), images and audio also from the
//!   `data:` and `blob:` URLs the page makes itself, no frames, no plugins, and no other
//!   site may frame the page.
//! - Hashed assets (`/assets/name-HASH.js`) are cached for a year (`immutable`); the page
//!   itself is revalidated every time (`no-cache`, with an entity tag), so a new binary's
//!   UI is seen at the next load.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;

/// One embedded file.
#[derive(Debug)]
pub(crate) struct Asset {
    /// The URL path, from `/`.
    pub(crate) path: &'static str,
    pub(crate) bytes: &'static [u8],
    /// The same bytes gzip-compressed, when the UI build wrote them.
    pub(crate) gzip: Option<&'static [u8]>,
    pub(crate) content_type: &'static str,
    /// A quoted entity tag derived from the bytes.
    pub(crate) etag: &'static str,
    /// Whether the name carries a content hash, so the file can be cached for good.
    pub(crate) immutable: bool,
}

include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));

/// The Content-Security-Policy of every UI response.
pub(crate) const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data: blob:; media-src 'self' blob:; font-src 'self'; \
    connect-src 'self' blob:; worker-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// Shown at `/` by a binary built without the UI.
const HOW_TO_BUILD: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Aura: the web UI is not built</title></head>
<body>
<main>
<h1>Aura's web UI is not in this binary</h1>
<p>This <code>aura</code> was built without the web UI's files, so only the API is served
(its description is at <a href="/openapi.json">/openapi.json</a>).</p>
<p>To build the UI into the binary, from the repository's root:</p>
<pre>./scripts/setup-ui.sh --no-browser     # npm ci in ui/
(cd ui &amp;&amp; npm run build)              # writes ui/dist
cargo build --release -p aura-cli      # embeds ui/dist</pre>
<p><code>./scripts/demo.sh</code> does all of this.</p>
</main>
</body></html>
"#;

fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

fn security_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        header::HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    );
}

/// Answers one embedded file, compressed when the client accepts gzip, or 304 when the
/// client's copy is current.
fn serve(asset: &'static Asset, request: &HeaderMap) -> Response {
    let mut headers = HeaderMap::new();
    security_headers(&mut headers);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if asset.immutable {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == asset.etag || t.trim() == "*")
        });
    if fresh {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    let gzip_ok = request
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(accepts_gzip);
    match asset.gzip {
        Some(gz) if gzip_ok => {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            (StatusCode::OK, headers, gz).into_response()
        }
        _ => (StatusCode::OK, headers, asset.bytes).into_response(),
    }
}

/// Whether an `Accept-Encoding` value admits gzip (and does not refuse it with `q=0`).
fn accepts_gzip(value: &str) -> bool {
    value.split(',').any(|part| {
        let mut it = part.split(';');
        let coding = it.next().unwrap_or("").trim();
        let refused = it.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

async fn index(request: HeaderMap) -> Response {
    match find("/index.html") {
        Some(asset) => serve(asset, &request),
        None => {
            let mut headers = HeaderMap::new();
            security_headers(&mut headers);
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            (StatusCode::OK, headers, HOW_TO_BUILD).into_response()
        }
    }
}

async fn file(uri: axum::http::Uri, request: HeaderMap) -> Response {
    match find(uri.path()) {
        Some(asset) => serve(asset, &request),
        None => {
            let mut response =
                crate::error::ApiError::not_found("no such file of the web UI").into_response();
            security_headers(response.headers_mut());
            response
        }
    }
}

/// `/` and every file of the built UI. Not part of the OpenAPI document: these are the
/// UI's files, not the API.
pub(crate) fn routes() -> Router<AppState> {
    let mut router = Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/assets/{*file}", get(file));
    // Files at the top of `dist` (the icon, the manifest) each get their own route, so the
    // API's 404 for unknown paths stays as it is.
    for asset in ASSETS {
        if asset.path != "/index.html" && !asset.path.starts_with("/assets/") {
            router = router.route(asset.path, get(file));
        }
    }
    router
}

#[cfg(test)]
mod tests {
    use super::accepts_gzip;

    #[test]
    fn gzip_is_served_only_where_accepted() {
        for (value, ok) in [
            ("gzip, deflate, br", true),
            ("br;q=1.0, gzip;q=0.8", true),
            ("*", true),
            ("identity", false),
            ("gzip;q=0", false),
            ("deflate", false),
            ("", false),
        ] {
            assert_eq!(accepts_gzip(value), ok, "{value:?}");
        }
    }
}
