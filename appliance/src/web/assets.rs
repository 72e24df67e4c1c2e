//! The UI's pages, embedded in the binary: hand-written HTML, CSS and JavaScript, no framework, no CDN,
//! nothing fetched at run time.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The single page.
pub const INDEX_HTML: &str = include_str!("assets/index.html");
/// Its script.
pub const APP_JS: &str = include_str!("assets/app.js");
/// Its style.
pub const APP_CSS: &str = include_str!("assets/app.css");

/// The assets' total size, bytes (at most 300 KB: tested).
pub fn total_size() -> usize {
    INDEX_HTML.len() + APP_JS.len() + APP_CSS.len()
}

pub(super) fn page(body: &'static str, kind: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn assets_are_small_and_self_contained() {
        assert!(
            super::total_size() <= 300 * 1024,
            "{} bytes",
            super::total_size()
        );
        for a in [super::INDEX_HTML, super::APP_JS, super::APP_CSS] {
            assert!(
                !a.contains("http://") && !a.contains("https://"),
                "an asset refers to another site"
            );
        }
    }
}
