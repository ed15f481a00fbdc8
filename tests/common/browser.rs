//! Opening a self-contained HTML file in headless Chromium, offline: it must render, every image must
//! load, and nothing may be fetched.
//!
//! The browser is `$STEREO_CHROMIUM`, or the first of `chromium-headless-shell`, `chromium`,
//! `chromium-browser`, `google-chrome` on the PATH (Debian: `apt-get install chromium-headless-shell`;
//! `.ci/run` installs it). Without one the check is skipped with a message, unless
//! `STEREO_REQUIRE_BROWSER=1` (set by `.ci/run` once it has installed one), where that is a failure.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// What the browser saw.
#[derive(Debug)]
pub struct Rendered {
    /// `<img>` elements.
    pub images: usize,
    /// Of those, the ones that did not load.
    pub broken: usize,
    /// Inline `<svg>` elements.
    pub svgs: usize,
    /// Characters of text the page rendered.
    pub text_chars: usize,
    /// Network requests other than the page itself (`http`, `https`, `ws`, `ftp`).
    pub fetched: Vec<String>,
}

fn browser() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("STEREO_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    [
        "chromium-headless-shell",
        "chromium",
        "chromium-browser",
        "google-chrome",
    ]
    .iter()
    .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
    .find(|candidate| candidate.is_file())
}

/// Renders `page` in headless Chromium; `None` (after a message) when no browser is installed and
/// none is required.
pub fn render_offline(page: &Path) -> Option<Rendered> {
    let Some(browser) = browser() else {
        assert!(
            std::env::var("STEREO_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "STEREO_REQUIRE_BROWSER=1 but no headless Chromium was found"
        );
        eprintln!(
            "SKIPPED the browser check of {}: no headless Chromium (apt-get install chromium-headless-shell)",
            page.display()
        );
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    // A copy of the page with a probe script appended: the page itself has none.
    let mut html = std::fs::read_to_string(page).unwrap();
    html.push_str(
        "<script>window.addEventListener('load',()=>{const i=[...document.images];\
         document.title='RENDERED images='+i.length+' broken='+i.filter(x=>!x.complete||x.naturalWidth===0).length\
         +' svgs='+document.querySelectorAll('svg').length+' text='+document.body.innerText.length;});</script>",
    );
    let probe = dir.path().join("page.html");
    std::fs::write(&probe, html).unwrap();
    let net_log = dir.path().join("net.json");
    let output = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--log-net-log={}", net_log.display()))
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg("--dump-dom")
        .arg(format!("file://{}", probe.display()))
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", browser.display()));
    let dom = String::from_utf8_lossy(&output.stdout);
    let title = dom
        .split("<title>")
        .nth(1)
        .and_then(|t| t.split("</title>").next())
        .unwrap_or_default()
        .to_string();
    assert!(
        title.starts_with("RENDERED"),
        "{} did not finish loading in {}: title {title:?}, stderr {}",
        page.display(),
        browser.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let field = |name: &str| -> usize {
        title
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {title:?}"))
    };
    let log = std::fs::read_to_string(&net_log).unwrap_or_default();
    let fetched = log
        .split("\"url\":\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|url| {
            ["http:", "https:", "ws:", "wss:", "ftp:"]
                .iter()
                .any(|s| url.starts_with(s))
        })
        .map(str::to_string)
        .collect();
    Some(Rendered {
        images: field("images"),
        broken: field("broken"),
        svgs: field("svgs"),
        text_chars: field("text"),
        fetched,
    })
}
