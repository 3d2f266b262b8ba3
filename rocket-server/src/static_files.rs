//! Static files served by the HTTP front under one path prefix, e.g. `rocket-cli --demo`'s
//! demo page under `/demo/`. The files are given whole (usually embedded in the binary);
//! nothing is read from disk.
//!
//! Under the prefix, `GET` and `HEAD` of a listed path answer `200` with the file's
//! `Content-Type`, `Content-Length` and `Cache-Control: no-cache`; another method answers
//! `405`; any other path `404`. The prefix without its trailing `/` redirects to it (`308`).

use std::borrow::Cow;

use rocket_proto::ConfigError;
use tungstenite::http::{Method, StatusCode};

/// One file: the request path it answers (under the prefix), its content type, its bytes.
#[derive(Debug, Clone)]
pub struct StaticFile {
    /// The full request path, e.g. `/demo/` or `/demo/rocket.js`.
    pub path: Cow<'static, str>,
    /// The `Content-Type` it is served with, e.g. `text/html; charset=utf-8`.
    pub content_type: &'static str,
    /// The file's bytes.
    pub body: Cow<'static, [u8]>,
}

/// Files under one path prefix.
#[derive(Debug, Clone)]
pub struct StaticFiles {
    prefix: String,
    files: Vec<StaticFile>,
}

impl StaticFiles {
    /// Files under `prefix`, which must start and end with `/` and not be `/` alone (the
    /// root would shadow every hub); each file's path must lie under it.
    pub fn new(prefix: impl Into<String>, files: Vec<StaticFile>) -> Result<Self, ConfigError> {
        let prefix = prefix.into();
        let invalid = |reason: String| ConfigError::Invalid {
            key: format!("static file prefix {prefix:?}"),
            reason,
        };
        if prefix.len() < 3 || !prefix.starts_with('/') || !prefix.ends_with('/') {
            return Err(invalid(
                "must start and end with `/`, and not be `/` alone".into(),
            ));
        }
        if let Some(f) = files.iter().find(|f| !f.path.starts_with(prefix.as_str())) {
            return Err(invalid(format!("file {:?} is not under it", f.path)));
        }
        Ok(Self { prefix, files })
    }

    /// The prefix, with its trailing `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether requests for `path` are answered here: the prefix, anything under it, and
    /// the prefix without its trailing `/`.
    /// The prefix without its trailing `/`, as a metrics label (`/demo`).
    pub(crate) fn prefix_label(&self) -> &'static str {
        // Labels are bounded by what the server serves; one prefix per server.
        match self.prefix.as_str() {
            "/demo/" => "/demo",
            _ => "static",
        }
    }

    /// Whether `path` lies under the prefix (or is the prefix without its `/`).
    pub fn covers(&self, path: &str) -> bool {
        path.starts_with(self.prefix.as_str()) || path == self.bare_prefix()
    }

    fn bare_prefix(&self) -> &str {
        &self.prefix[..self.prefix.len() - 1]
    }

    /// The whole response to a request for `path` (which [`covers`](Self::covers) must
    /// accept).
    pub(crate) fn respond(&self, method: &Method, path: &str, close: bool) -> Vec<u8> {
        let head_only = *method == Method::HEAD;
        if *method != Method::GET && !head_only {
            let extra = [("Allow", "GET, HEAD")];
            return text(StatusCode::METHOD_NOT_ALLOWED, "use GET", close, &extra);
        }
        if path == self.bare_prefix() {
            let extra = [("Location", self.prefix.as_str())];
            return text(StatusCode::PERMANENT_REDIRECT, "moved", close, &extra);
        }
        match self.files.iter().find(|f| f.path == path) {
            Some(f) => respond(
                StatusCode::OK,
                f.content_type,
                &f.body,
                close,
                head_only,
                &[],
            ),
            None => text(StatusCode::NOT_FOUND, "not found", close, &[]),
        }
    }
}

fn text(status: StatusCode, text: &str, close: bool, extra: &[(&str, &str)]) -> Vec<u8> {
    let body = format!("{text}\n");
    let content_type = "text/plain; charset=utf-8";
    respond(status, content_type, body.as_bytes(), close, false, extra)
}

/// The HTTP front's response, revalidated on every load (the files change with the
/// binary and carry no validator) and never content-sniffed.
fn respond(
    status: StatusCode,
    content_type: &str,
    body: &[u8],
    close: bool,
    head_only: bool,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    let mut headers = vec![("X-Content-Type-Options", "nosniff")];
    headers.extend_from_slice(extra);
    crate::http::response(
        status,
        content_type,
        body,
        close,
        head_only,
        "no-cache",
        &headers,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> StaticFiles {
        let file = |path: &'static str, content_type, body: &'static [u8]| StaticFile {
            path: path.into(),
            content_type,
            body: body.into(),
        };
        StaticFiles::new(
            "/demo/",
            vec![
                file("/demo/", "text/html; charset=utf-8", b"<p>hi</p>"),
                file("/demo/a.js", "text/javascript; charset=utf-8", b"x()"),
            ],
        )
        .unwrap()
    }

    fn get(method: Method, path: &str) -> String {
        String::from_utf8(files().respond(&method, path, false)).unwrap()
    }

    #[test]
    fn prefixes_and_paths_are_checked() {
        for bad in ["/", "demo/", "/demo", ""] {
            assert!(StaticFiles::new(bad, vec![]).is_err(), "{bad:?}");
        }
        let outside = StaticFile {
            path: "/other".into(),
            content_type: "text/plain",
            body: b"".as_slice().into(),
        };
        let e = StaticFiles::new("/demo/", vec![outside]).unwrap_err();
        assert!(e.to_string().contains("\"/other\" is not under it"), "{e}");
        let f = files();
        assert!(f.covers("/demo/") && f.covers("/demo/x") && f.covers("/demo"));
        assert!(!f.covers("/demos") && !f.covers("/echo") && !f.covers("/"));
    }

    #[test]
    fn files_are_served_with_type_length_and_cache_control() {
        let r = get(Method::GET, "/demo/");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(
            r.contains("Content-Type: text/html; charset=utf-8\r\n"),
            "{r}"
        );
        assert!(r.contains("Content-Length: 9\r\n"), "{r}");
        assert!(r.contains("Cache-Control: no-cache\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\n<p>hi</p>") && !r.contains("Connection: close"));
        let r = get(Method::HEAD, "/demo/a.js");
        assert!(
            r.contains("Content-Length: 3\r\n") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
        assert!(r.contains("text/javascript"), "{r}");
        let r = String::from_utf8(files().respond(&Method::GET, "/demo/a.js", true)).unwrap();
        assert!(
            r.contains("Connection: close\r\n") && r.ends_with("x()"),
            "{r}"
        );
    }

    #[test]
    fn other_paths_methods_and_the_bare_prefix() {
        for path in ["/demo/nope", "/demo/a.js/", "/demo//"] {
            assert!(get(Method::GET, path).starts_with("HTTP/1.1 404"), "{path}");
        }
        let r = get(Method::POST, "/demo/");
        assert!(r.starts_with("HTTP/1.1 405") && r.contains("Allow: GET, HEAD\r\n"));
        let r = get(Method::GET, "/demo");
        assert!(
            r.starts_with("HTTP/1.1 308") && r.contains("Location: /demo/\r\n"),
            "{r}"
        );
    }
}
