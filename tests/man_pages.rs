//! Every man page renders with groff without a single warning, and every binary has one.

mod common;

use std::path::Path;
use std::process::Command;

use common::require_tool;

#[test]
fn man_pages_render_cleanly() {
    if !require_tool("groff") {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let mut pages = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
            continue;
        };
        if !ext.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        pages += 1;
        let out = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&path)
            .output()
            .expect("groff");
        assert!(out.status.success(), "{}", path.display());
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "",
            "groff warnings for {}",
            path.display()
        );
    }
    assert!(pages > 0);
}

#[test]
fn every_binary_has_a_man_page() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for entry in std::fs::read_dir(root.join("src/bin")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let found = std::fs::read_dir(root.join("man")).unwrap().any(|m| {
            let m = m.unwrap().file_name().to_string_lossy().into_owned();
            m.rsplit_once('.').is_some_and(|(stem, _)| stem == name)
        });
        assert!(found, "src/bin/{name}.rs has no man page");
    }
}
