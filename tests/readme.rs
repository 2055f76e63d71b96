//! The README's endpoint table and set-up commands match the code.

mod common;

/// Every endpoint a server with every probe registered lists in its index (the router's own
/// table) has its row in the README.
#[tokio::test]
async fn readme_endpoint_table_lists_every_endpoint() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let server = common::spawn();
    let endpoints = common::endpoints(&server).await;
    assert!(endpoints.len() >= 20, "{endpoints:?}");
    for (method, path, _, _) in endpoints {
        let row = format!("| `{method} {path}`");
        assert!(readme.contains(&row), "README endpoint table lacks {row}");
    }
}

#[test]
fn ci_runs_the_readme_test_command() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let ci = std::fs::read_to_string(format!("{root}/.ci/run")).unwrap();
    let test_cmd = readme
        .lines()
        .find(|l| l.contains("# the tests"))
        .and_then(|l| l.split('#').next())
        .map(str::trim)
        .expect("README has a test command line");
    assert!(
        ci.lines().any(|l| l.trim() == test_cmd),
        "{test_cmd:?} not in .ci/run"
    );
}
