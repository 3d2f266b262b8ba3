//! Browser origins, compared the way browsers write them.
//!
//! A browser sends `Origin: https://app.example.com` (the ASCII serialisation of the
//! page's origin: scheme and host in lower case, the scheme's default port left out, no
//! path). `AllowedOrigins` entries are stored in that form at startup, and each request's
//! header is put in it before the comparison, so `HTTPS://App.Example.com:443` in the
//! config matches what the browser sends.

use std::sync::{Arc, PoisonError, RwLock};

use url::{Origin, Url};

/// The serialised origin of `text`, or why it is not one a browser could send.
fn serialise(text: &str) -> Result<String, String> {
    let url = Url::parse(text).map_err(|e| format!("{text:?} is not an origin: {e}"))?;
    let Some((_, rest)) = text.split_once("://") else {
        return Err(format!(
            "{text:?} has no scheme; write it like \"https://app.example.com\""
        ));
    };
    if rest.contains(['/', '?', '#']) {
        return Err(format!(
            "{text:?} has a path, query or fragment; an Origin header is only scheme://host[:port]"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{text:?} has user information; an Origin header never does"
        ));
    }
    match url.origin() {
        origin @ Origin::Tuple(..) => Ok(origin.ascii_serialization()),
        Origin::Opaque(_) => Err(format!(
            "{text:?} has an opaque origin (browsers send \"null\" for it); use http:// or https://"
        )),
    }
}

/// An `AllowedOrigins` entry in the form browsers send, or why no browser could send it.
pub(crate) fn normalize_allowed(entry: &str) -> Result<String, String> {
    serialise(entry)
}

/// Whether the `Origin` header `header` names one of `allowed` (entries already
/// normalised). `null` and malformed headers match nothing.
pub(crate) fn is_allowed(allowed: &[String], header: &[u8]) -> bool {
    let Ok(header) = std::str::from_utf8(header) else {
        return false;
    };
    match serialise(header) {
        Ok(origin) => allowed.contains(&origin),
        Err(_) => false,
    }
}

/// A hub's `AllowedOrigins`, replaceable while the server runs (a reload). `None`: any
/// origin.
#[derive(Debug, Default)]
pub(crate) struct AllowedOrigins(RwLock<Option<Arc<[String]>>>);

impl AllowedOrigins {
    /// The list from the config (entries already normalised).
    pub(crate) fn new(list: Option<&[String]>) -> Self {
        Self(RwLock::new(list.map(Arc::from)))
    }

    /// Whether a handshake whose `Origin` header is `header` may connect.
    pub(crate) fn allow(&self, header: &[u8]) -> bool {
        // A clone of the Arc: the lock is held for a pointer copy only.
        let list = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        list.is_none_or(|list| is_allowed(&list, header))
    }

    /// Replaces the list; returns whether it changed.
    pub(crate) fn replace(&self, list: Option<&[String]>) -> bool {
        let mut current = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if current.as_deref() == list {
            return false;
        }
        *current = list.map(Arc::from);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_normalised_like_browsers_serialise_origins() {
        for (entry, stored) in [
            ("https://app.example.com", "https://app.example.com"),
            ("HTTPS://App.Example.COM", "https://app.example.com"),
            ("https://app.example.com:443", "https://app.example.com"),
            ("http://localhost:80", "http://localhost"),
            ("http://localhost:8080", "http://localhost:8080"),
            (
                "https://app.example.com:8443",
                "https://app.example.com:8443",
            ),
            ("http://127.0.0.1:3000", "http://127.0.0.1:3000"),
            ("http://[::1]:3000", "http://[::1]:3000"),
            ("https://bücher.example", "https://xn--bcher-kva.example"),
        ] {
            assert_eq!(normalize_allowed(entry).as_deref(), Ok(stored), "{entry}");
        }
    }

    #[test]
    fn entries_no_browser_could_send_are_refused() {
        for (entry, why) in [
            ("app.example.com", "not an origin"),
            ("*", "not an origin"),
            ("https://app.example.com/", "path"),
            ("https://app.example.com/app", "path"),
            ("https://app.example.com?x", "path, query"),
            ("https://user@app.example.com", "user information"),
            ("file:///tmp/x", "path"),
            ("data:text/plain,hi", "no scheme"),
            ("null", "not an origin"),
            ("", "not an origin"),
        ] {
            let e = normalize_allowed(entry).unwrap_err();
            assert!(e.contains(why), "{entry}: {e}");
        }
    }

    #[test]
    fn headers_match_in_any_case_and_with_default_ports() {
        let allowed = vec![
            normalize_allowed("https://App.example.com").unwrap(),
            normalize_allowed("http://localhost:8080").unwrap(),
        ];
        for header in [
            "https://app.example.com",
            "HTTPS://APP.EXAMPLE.COM",
            "https://app.example.com:443",
            "http://localhost:8080",
        ] {
            assert!(is_allowed(&allowed, header.as_bytes()), "{header}");
        }
        for header in [
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://evil.example.com",
            "https://app.example.com.evil.example",
            "http://localhost",
            "null",
            "",
        ] {
            assert!(!is_allowed(&allowed, header.as_bytes()), "{header}");
        }
        assert!(!is_allowed(&allowed, b"https://app.example.com\xff"));
    }
}
