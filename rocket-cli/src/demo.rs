//! The demo page served at `GET /demo/` with `--demo`: a small chat and who-is-here page
//! built on the JavaScript client (`clients/js/`), embedded in the binary.

use rocket_server::{StaticFile, StaticFiles};

/// Where the demo page is served.
pub const PREFIX: &str = "/demo/";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// `(path under the prefix, content type, bytes)` of every file of the page.
const FILES: &[(&str, &str, &str)] = &[
    ("", HTML, include_str!("../../clients/js/demo/index.html")),
    ("demo.js", JS, include_str!("../../clients/js/demo/demo.js")),
    (
        "demo.css",
        CSS,
        include_str!("../../clients/js/demo/demo.css"),
    ),
    ("rocket.js", JS, include_str!("../../clients/js/rocket.js")),
];

/// The demo page's files, for [`rocket_server::ServerState::with_static_files`].
pub fn files() -> StaticFiles {
    let files = FILES
        .iter()
        .map(|&(name, content_type, body)| StaticFile {
            path: format!("{PREFIX}{name}").into(),
            content_type,
            body: body.as_bytes().into(),
        })
        .collect();
    // PREFIX starts and ends with `/`, and every path is built under it.
    StaticFiles::new(PREFIX, files).expect("the demo's paths are valid")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_loads_the_client() {
        let files = super::files();
        assert_eq!(files.prefix(), "/demo/");
        let index = super::FILES[0].2;
        assert!(index.contains("demo.js"), "index.html loads demo.js");
        assert!(
            super::FILES[1].2.contains("./rocket.js"),
            "demo.js imports the client"
        );
    }
}
