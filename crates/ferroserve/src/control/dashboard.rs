//! The dashboard's files, embedded in the binary: `GET /` is its page and `GET /assets/NAME` its script, style and uPlot; they hold no data, so they are served without a token.

use std::sync::LazyLock;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::Full;

use super::error;

/// One embedded file.
struct Asset {
    /// Its name under `/assets/` (`index.html` is served at `/`).
    name: &'static str,
    /// Its `Content-Type`.
    content_type: &'static str,
    /// Its bytes, as built into the binary.
    body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// The [`Asset`] of `crates/ferroserve/assets/dashboard/NAME`, of type `kind`.
macro_rules! asset {
    ($name:literal, $kind:expr) => {
        Asset {
            name: $name,
            content_type: $kind,
            body: include_bytes!(concat!("../../assets/dashboard/", $name)),
        }
    };
}

/// Every file the dashboard is made of. uPlot's two files are copies of its npm package's
/// `dist/`, made by `dashboard/build.sh`.
const ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("app.js", JS),
    asset!("common.js", JS),
    asset!("actions.js", JS),
    asset!("charts.js", JS),
    asset!("app.css", CSS),
    asset!("uPlot.iife.min.js", JS),
    asset!("uPlot.min.css", CSS),
    asset!("uPlot.LICENSE.txt", TEXT),
];

/// Each asset's `ETag` (a hash of its bytes), in the order of [`ASSETS`], made once.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let tag = format!("\"{:016x}\"", crate::fnv::fnv1a(asset.body.iter().copied()));
            HeaderValue::from_str(&tag).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
        })
        .collect()
});

/// The page may load only its own files and call only its own server, and no other site
/// may frame it (its buttons change what runs). uPlot sets inline styles.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The dashboard's answer to a request for `path`, or `None` when the path is not the
/// dashboard's (`/`, `/index.html` and `/assets/...` are).
pub(super) fn answer(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Option<http::Response<Full<Bytes>>> {
    let name = match path {
        "/" | "/index.html" => "index.html",
        _ => path.strip_prefix("/assets/")?,
    };
    if method != Method::GET && method != Method::HEAD {
        return Some(error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{method} is not allowed on {path}: the dashboard's files are read-only"),
        ));
    }
    let Some(index) = ASSETS.iter().position(|asset| asset.name == name) else {
        return Some(error(
            StatusCode::NOT_FOUND,
            &format!("the dashboard has no file {path}"),
        ));
    };
    Some(file(&ASSETS[index], &ETAGS[index], headers))
}

/// `asset` with its type and tag, or 304 when the browser's copy is current.
fn file(asset: &Asset, etag: &HeaderValue, headers: &HeaderMap) -> http::Response<Full<Bytes>> {
    let current = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/").as_bytes() == etag.as_bytes()
        });
    let mut response = if current {
        let mut response = http::Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        let mut response = http::Response::new(Full::new(Bytes::from_static(asset.body)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        response
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, headers: &HeaderMap) -> Option<http::Response<Full<Bytes>>> {
        answer(&Method::GET, path, headers)
    }

    #[test]
    fn the_page_and_its_assets_have_their_types_and_no_cache() {
        let none = HeaderMap::new();
        for (path, kind) in [
            ("/", "text/html; charset=utf-8"),
            ("/assets/app.js", "text/javascript; charset=utf-8"),
            ("/assets/common.js", "text/javascript; charset=utf-8"),
            ("/assets/actions.js", "text/javascript; charset=utf-8"),
            ("/assets/charts.js", "text/javascript; charset=utf-8"),
            ("/assets/app.css", "text/css; charset=utf-8"),
            (
                "/assets/uPlot.iife.min.js",
                "text/javascript; charset=utf-8",
            ),
            ("/assets/uPlot.min.css", "text/css; charset=utf-8"),
        ] {
            let response = get(path, &none).unwrap_or_else(|| panic!("{path} is served"));
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(response.headers()[header::CONTENT_TYPE], kind, "{path}");
            assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache");
            assert!(response.headers().contains_key(header::ETAG));
        }
    }

    #[test]
    fn others_are_not_the_dashboards_or_are_404() {
        let none = HeaderMap::new();
        assert!(get("/api/status", &none).is_none());
        assert!(get("/metrics", &none).is_none());
        let missing = get("/assets/../Cargo.toml", &none).map(|r| r.status());
        assert_eq!(missing, Some(StatusCode::NOT_FOUND));
        let missing = get("/assets/", &none).map(|r| r.status());
        assert_eq!(missing, Some(StatusCode::NOT_FOUND));
        let posted = answer(&Method::POST, "/", &none).map(|r| r.status());
        assert_eq!(posted, Some(StatusCode::METHOD_NOT_ALLOWED));
    }

    #[test]
    fn a_current_copy_gets_304() {
        let none = HeaderMap::new();
        let first = get("/assets/app.js", &none).expect("served");
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, first.headers()[header::ETAG].clone());
        let again = get("/assets/app.js", &headers).expect("served");
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"old\""));
        let changed = get("/assets/app.js", &headers).expect("served");
        assert_eq!(changed.status(), StatusCode::OK);
    }

    #[test]
    fn every_file_the_page_names_is_embedded() {
        let page = String::from_utf8_lossy(ASSETS[0].body);
        let named: Vec<&str> = page
            .split("/assets/")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .collect();
        assert!(named.len() >= 6, "{named:?}");
        for name in named {
            assert!(
                ASSETS.iter().any(|asset| asset.name == name),
                "index.html loads /assets/{name}, which is not embedded"
            );
        }
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for asset in ASSETS.iter().filter(|a| !a.name.starts_with("uPlot")) {
            let text = String::from_utf8_lossy(asset.body);
            assert!(
                !text.contains("http://") && !text.contains("https://") && !text.contains("//cdn"),
                "{} names an external URL",
                asset.name
            );
        }
    }
}
