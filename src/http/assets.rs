//! The web UI: the files of `static/` (plain HTML, CSS and ES modules, no build step), embedded
//! in the binary with `rust-embed`, so one binary is the whole product.
//!
//! This is the app's default service: a `GET` or `HEAD` that no route took lands here.
//!
//! - A path naming a file serves it, with a content type from its extension.
//! - Any other path serves `index.html`, so the page's own routes (`/connect`, `/s/<id>`) survive
//!   a reload. Two exceptions answer the API's JSON 404 instead: paths under `/api/` and `/ws/`
//!   (a client of the API must never get a page back), and paths whose last segment has an
//!   extension (`/app.jss`): a missing script or stylesheet should fail as a 404 in the
//!   browser's console, not as a page parsed as JavaScript.
//! - Other methods on unknown paths get the JSON 404, as before the UI existed.
//!
//! Caching: every file, `index.html` included, is sent with `Cache-Control: no-cache` and a
//! strong `ETag` (the first 16 bytes of the SHA-256 that `rust-embed` computes at build time),
//! and a matching `If-None-Match` answers 304 with no body. Hashed file names with `immutable`
//! would save the revalidation round trip, but ES modules import each other by name, so
//! versioned names need a build step that rewrites the imports, which this UI avoids on
//! purpose. Revalidation costs one small request per file per page load on a page of a dozen
//! files, and an upgraded daemon can never leave a browser running a mix of old and new
//! modules.
//!
//! `ui.static_dir` (development) serves a folder instead: files are read on every request (in a
//! blocking task) and sent with `Cache-Control: no-store`, so an edit shows on reload. Paths
//! are checked segment by segment (no `..`, no empty or dot segments) and the resolved file
//! must stay inside the folder, symlinks included.
//!
//! The security headers (CSP with no inline script, `nosniff`, `no-referrer`, no framing) come
//! from [`super::observe`], like on every other answer. `nosniff` is why content types must be
//! exact: a module script served as anything but JavaScript does not run.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use rust_embed::RustEmbed;

use super::AppState;
use crate::error::json_error;

/// The UI's files, compiled into the binary (read from the source tree in debug builds, which
/// is `rust-embed`'s default).
#[derive(RustEmbed)]
#[folder = "static/"]
struct Embedded;

/// The page served for every client-side route.
const INDEX: &str = "index.html";

/// `Cache-Control` of embedded files: always revalidate, with the ETag (see the module doc).
const CACHE_EMBEDDED: &str = "no-cache";

/// `Cache-Control` of files served from `ui.static_dir`: they change under the developer's
/// hands, and carry no ETag.
const CACHE_DEV: &str = "no-store";

/// One file to send.
struct Asset {
    body: Bytes,
    content_type: &'static str,
    /// A quoted strong ETag, for embedded files.
    etag: Option<String>,
}

/// The default service: a UI file, `index.html` for a client route, or the JSON 404.
pub(super) async fn serve(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let path = req.path();
    if !(req.method() == Method::GET || req.method() == Method::HEAD) || is_api_path(path) {
        return super::not_found().await;
    }
    let Some(relative) = file_path(path) else {
        return super::not_found().await;
    };
    let settings = state.settings.get();
    let static_dir = settings.ui.static_dir.as_deref();
    let asset = match relative {
        None => load(static_dir, INDEX).await,
        Some(relative) => match load(static_dir, &relative).await {
            Some(asset) => Some(asset),
            None if has_extension(&relative) => return super::not_found().await,
            None => load(static_dir, INDEX).await,
        },
    };
    match asset {
        Some(asset) => respond(&req, asset, static_dir.is_some()),
        // Only a misconfigured `ui.static_dir` gets here: the embedded copy has an index.
        None => json_error(
            StatusCode::NOT_FOUND,
            "ui_missing",
            "the web UI's index.html is missing; check ui.static_dir",
        ),
    }
}

/// Whether a path belongs to the API or the sockets, which never fall back to the page.
fn is_api_path(path: &str) -> bool {
    ["/api", "/ws"]
        .iter()
        .any(|p| path == *p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
}

/// The file a request path names, relative to the UI's root: `Some(None)` for the root (the
/// index), `Some(Some(path))` for a well-formed path, `None` for a path with an empty, `.` or
/// `..` segment or a backslash, which can name no file of ours.
fn file_path(path: &str) -> Option<Option<String>> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    if trimmed.is_empty() {
        return Some(None);
    }
    // A trailing slash names no file; treat it as a client route.
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    let ok = trimmed
        .split('/')
        .all(|seg| !seg.is_empty() && seg != "." && seg != ".." && !seg.contains('\\'));
    ok.then(|| Some(trimmed.to_owned()))
}

/// Whether the last segment of a path has an extension (`app.js`, `.well-known` does not
/// count: a leading dot is not an extension).
fn has_extension(path: &str) -> bool {
    let last = path.rsplit('/').next().unwrap_or(path);
    last.char_indices().any(|(i, c)| c == '.' && i > 0)
}

/// Finds a file in the configured folder, or else in the embedded copy.
async fn load(static_dir: Option<&Path>, relative: &str) -> Option<Asset> {
    let content_type = content_type(relative);
    match static_dir {
        Some(dir) => {
            let dir = dir.to_path_buf();
            let relative = relative.to_owned();
            let body = web::block(move || read_inside(&dir, &relative))
                .await
                .ok()
                .flatten()?;
            Some(Asset {
                body: Bytes::from(body),
                content_type,
                etag: None,
            })
        }
        None => {
            let file = Embedded::get(relative)?;
            let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
            let body = match file.data {
                Cow::Borrowed(bytes) => Bytes::from_static(bytes),
                Cow::Owned(bytes) => Bytes::from(bytes),
            };
            Some(Asset {
                body,
                content_type,
                etag: Some(etag),
            })
        }
    }
}

/// Reads `dir/relative` if it is a regular file whose real path is inside `dir`'s real path.
fn read_inside(dir: &Path, relative: &str) -> Option<Vec<u8>> {
    let root = dir.canonicalize().ok()?;
    let path: PathBuf = root.join(relative).canonicalize().ok()?;
    if !path.starts_with(&root) || !path.is_file() {
        return None;
    }
    std::fs::read(path).ok()
}

/// The content type for a file name. Exact types matter: `nosniff` is on, and browsers refuse
/// module scripts and stylesheets served under another type.
fn content_type(path: &str) -> &'static str {
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "txt" | "md" | "" => "text/plain; charset=utf-8",
        _ => mime_guess::from_ext(&ext)
            .first_raw()
            .unwrap_or("application/octet-stream"),
    }
}

/// Whether an `If-None-Match` header matches `etag` (a list, `*`, or a weak form of it).
fn etag_matches(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

fn respond(req: &HttpRequest, asset: Asset, dev: bool) -> HttpResponse {
    let cache = if dev { CACHE_DEV } else { CACHE_EMBEDDED };
    if let Some(etag) = &asset.etag {
        if etag_matches(req, etag) {
            return HttpResponse::NotModified()
                .insert_header((header::ETAG, etag.as_str()))
                .insert_header((header::CACHE_CONTROL, cache))
                .finish();
        }
    }
    let mut response = HttpResponse::Ok();
    response
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        ))
        .insert_header((header::CACHE_CONTROL, cache));
    if let Some(etag) = &asset.etag {
        response.insert_header((header::ETAG, etag.as_str()));
    }
    response.body(asset.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_and_socket_paths_never_fall_back_to_the_page() {
        for p in ["/api", "/api/", "/api/nope", "/ws", "/ws/sessions/x"] {
            assert!(is_api_path(p), "{p}");
        }
        for p in ["/", "/apix", "/wsx/a", "/connect", "/s/api"] {
            assert!(!is_api_path(p), "{p}");
        }
    }

    #[test]
    fn request_paths_map_to_files_or_are_refused() {
        assert_eq!(file_path("/"), Some(None));
        assert_eq!(file_path("/app.js"), Some(Some("app.js".into())));
        assert_eq!(
            file_path("/js/chat.js"),
            Some(Some("js/chat.js".to_owned()))
        );
        assert_eq!(file_path("/connect/"), Some(Some("connect".into())));
        for bad in ["/../x", "/a/../b", "/a//b", "/./a", "/a\\b"] {
            assert_eq!(file_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn extensions_tell_files_from_client_routes() {
        assert!(has_extension("app.js"));
        assert!(has_extension("vendor/marked.esm.js"));
        assert!(!has_extension("connect"));
        assert!(!has_extension("s/abc"));
        assert!(!has_extension(".well-known"));
    }

    #[test]
    fn content_types_are_exact() {
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("x.MJS"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("style.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("vendor/LICENSE"), "text/plain; charset=utf-8");
        assert_eq!(content_type("docs.png"), "image/png");
    }

    #[test]
    fn the_embedded_copy_has_the_page_and_its_modules() {
        let index = Embedded::get(INDEX).expect("index.html is embedded");
        let text = String::from_utf8_lossy(&index.data);
        assert!(text.contains("<script type=\"module\""), "{text}");
        // The CSP has no 'unsafe-inline': no inline script and no style attribute.
        for file in Embedded::iter() {
            if file.ends_with(".html") {
                let data = Embedded::get(&file).expect("listed file");
                let html = String::from_utf8_lossy(&data.data);
                assert!(!html.contains(" style="), "{file} has a style attribute");
                for chunk in html.split("<script").skip(1) {
                    let tag = chunk.split('>').next().unwrap_or_default();
                    assert!(tag.contains("src="), "{file} has an inline script");
                }
            }
        }
    }
}
