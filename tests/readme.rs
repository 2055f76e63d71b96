//! The docs match the code: docs/endpoints.md's route table is generated from the route
//! declarations (what the index lists), the README's endpoint table has a row for every
//! endpoint and none for an endpoint that does not exist, CI runs the README's test command,
//! and every relative link in README.md and docs/*.md leads to a file and heading that exist.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BEGIN: &str = "<!-- routes:begin";
const END: &str = "<!-- routes:end -->";
const UPDATE: &str = "UPDATE_DOCS=1 cargo test --all-features --test readme";

/// One endpoint as the index lists it.
#[derive(Debug, Clone, PartialEq)]
struct Endpoint {
    method: String,
    path: String,
    scope: String,
    summary: String,
    available: bool,
}

impl Endpoint {
    fn key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// The index's `endpoints` (`GET /debug/` as JSON) of `server`, in its order.
async fn index_endpoints(server: &common::Server) -> Vec<Endpoint> {
    let resp = common::client()
        .get(server.url("/debug/"))
        .bearer_auth(common::READ_SECRET)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    let field = |e: &serde_json::Value, name: &str| {
        e[name]
            .as_str()
            .unwrap_or_else(|| panic!("endpoint without a string `{name}`: {e}"))
            .to_string()
    };
    v["endpoints"]
        .as_array()
        .expect("the index JSON has `endpoints`")
        .iter()
        .map(|e| Endpoint {
            method: field(e, "method"),
            path: field(e, "path"),
            scope: field(e, "scope"),
            summary: field(e, "summary"),
            available: e["available"].as_bool().expect("`available` is a bool"),
        })
        .collect()
}

/// Every endpoint of a server with default Limits and default access, in index order; a
/// scope the builder can change (health, `/metrics`) reads `<default> (configurable)`.
async fn declared_endpoints() -> Vec<Endpoint> {
    let default = common::spawn();
    let flipped =
        common::spawn_with(|b| b.health_requires_token(true).metrics_requires_token(false));
    let mut endpoints = index_endpoints(&default).await;
    let other = index_endpoints(&flipped).await;
    assert_eq!(
        endpoints.iter().map(Endpoint::key).collect::<Vec<_>>(),
        other.iter().map(Endpoint::key).collect::<Vec<_>>(),
        "the access options change the list of endpoints"
    );
    for (e, o) in endpoints.iter_mut().zip(&other) {
        if e.scope != o.scope {
            e.scope = format!("{} (configurable)", e.scope);
        }
    }
    endpoints
}

/// `summary` as a table cell: `|` as `\|` (GFM tables need it inside code spans too), and
/// `<` outside code spans as `\<` so `<kind>` is not taken for an HTML tag.
fn cell(summary: &str) -> String {
    summary
        .split('`')
        .enumerate()
        .map(|(i, piece)| {
            let piece = piece.replace('|', "\\|");
            if i % 2 == 0 {
                piece.replace('<', "\\<")
            } else {
                piece
            }
        })
        .collect::<Vec<_>>()
        .join("`")
}

/// The markdown table of `endpoints`: method and path, scope, summary.
fn render(endpoints: &[Endpoint]) -> String {
    let mut out = String::from("| endpoint | scope | what it does |\n|---|---|---|\n");
    for e in endpoints {
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            e.key(),
            e.scope,
            cell(&e.summary)
        ));
    }
    out
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel))
        .unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// The byte range of the generated block's content in docs/endpoints.md: from the line after
/// the begin marker to the start of the end marker.
fn block_range(doc: &str) -> std::ops::Range<usize> {
    let begin = doc
        .find(BEGIN)
        .unwrap_or_else(|| panic!("docs/endpoints.md lacks the {BEGIN} … --> marker"));
    let start = begin
        + doc[begin..]
            .find('\n')
            .expect("a line break after the begin marker")
        + 1;
    let end = start
        + doc[start..]
            .find(END)
            .unwrap_or_else(|| panic!("docs/endpoints.md lacks {END} after {BEGIN}"));
    start..end
}

/// docs/endpoints.md's route table is the rendering of the declared routes; with
/// `UPDATE_DOCS=1` this test writes it instead.
#[tokio::test]
async fn endpoint_reference_is_generated_from_the_route_declarations() {
    let endpoints = declared_endpoints().await;
    assert!(endpoints.len() >= 20, "{endpoints:?}");
    // A probe that is not compiled in is still listed (from its declaration, answering 501),
    // so the rendering is the same in every build; this build's stand-ins:
    let stand_ins: Vec<_> = endpoints.iter().filter(|e| !e.available).collect();
    for e in &stand_ins {
        assert!(!e.summary.is_empty(), "{e:?}");
    }
    let table = render(&endpoints);

    let path = Path::new(ROOT).join("docs/endpoints.md");
    let doc = read("docs/endpoints.md");
    let range = block_range(&doc);
    if std::env::var("UPDATE_DOCS").as_deref() == Ok("1") {
        let mut updated = doc.clone();
        updated.replace_range(range, &table);
        if updated != doc {
            std::fs::write(&path, updated).unwrap();
        }
        return;
    }
    let current = &doc[range];
    if current != table {
        let want: Vec<_> = table.lines().collect();
        let have: Vec<_> = current.lines().collect();
        let i = (0..want.len().max(have.len()))
            .find(|&i| want.get(i) != have.get(i))
            .unwrap_or(0);
        panic!(
            "docs/endpoints.md's route table is out of date with the route declarations; run\n    \
             {UPDATE}\nfirst differing line of the block ({}):\n  docs:      {}\n  generated: {}",
            i + 1,
            have.get(i).copied().unwrap_or("<none>"),
            want.get(i).copied().unwrap_or("<none>"),
        );
    }
}

/// The `METHOD PATH` of each row of the README's endpoint table.
fn readme_table_rows(readme: &str) -> Vec<String> {
    let start = readme
        .find("<!-- endpoint-table")
        .expect("README has the <!-- endpoint-table --> marker");
    readme[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect()
}

/// The README's endpoint table has a row for every endpoint of a server with every probe
/// registered, and no row for an endpoint that does not exist.
#[tokio::test]
async fn readme_endpoint_table_matches_the_endpoints() {
    let readme = read("README.md");
    let server = common::spawn();
    let endpoints = common::endpoints(&server).await;
    assert!(endpoints.len() >= 20, "{endpoints:?}");
    let real: BTreeSet<String> = endpoints
        .iter()
        .map(|(method, path, _, _)| format!("{method} {path}"))
        .collect();
    for key in &real {
        let row = format!("| `{key}`");
        assert!(readme.contains(&row), "README endpoint table lacks {row}");
    }
    let rows = readme_table_rows(&readme);
    assert!(rows.len() >= 20, "{rows:?}");
    let stale: Vec<_> = rows.iter().filter(|r| !real.contains(*r)).collect();
    assert!(
        stale.is_empty(),
        "README endpoint table has rows for endpoints that do not exist: {stale:?}"
    );
}

#[test]
fn ci_runs_the_readme_test_command() {
    let readme = read("README.md");
    let ci = read(".ci/run");
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

/// README.md and docs/*.md, relative to the root.
fn markdown_files() -> Vec<String> {
    let mut files = vec!["README.md".to_string()];
    let mut docs: Vec<_> = std::fs::read_dir(Path::new(ROOT).join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The text of `md` outside fenced code blocks and inline code, line by line (numbered from 1).
fn prose_lines(md: &str) -> Vec<(usize, String)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in md.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Drop inline code spans: every other piece between backticks.
        let prose: String = line
            .split('`')
            .enumerate()
            .filter(|(j, _)| j % 2 == 0)
            .map(|(_, s)| s)
            .collect::<Vec<_>>()
            .join(" ");
        out.push((i + 1, prose));
    }
    out
}

/// The targets of the inline links `[text](target)` on `line`.
fn link_targets(line: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        let Some(end) = after.find(')') else { break };
        targets.push(after[..end].trim().to_string());
        rest = &after[end..];
    }
    targets
}

/// GitHub's anchor of a heading: lower case, punctuation other than `-` and `_` dropped,
/// spaces as `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of `md`'s headings (outside code blocks), with GitHub's `-1`, `-2` … for
/// repeats.
fn anchors(md: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut fenced = false;
    for line in md.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let text = line.trim_start_matches('#');
        if !text.starts_with(' ') {
            continue;
        }
        let base = slug(&text.replace('`', ""));
        let mut anchor = base.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        seen.insert(anchor);
    }
    seen
}

/// Every relative link in README.md and docs/*.md names a file that exists and, with a
/// `#anchor`, a heading of that file.
#[test]
fn relative_links_in_the_docs_resolve() {
    let root = PathBuf::from(ROOT);
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let text = read(&file);
        let dir = Path::new(&file).parent().unwrap().to_path_buf();
        for (line_no, line) in prose_lines(&text) {
            for target in link_targets(&line) {
                if target.contains("://") || target.starts_with("mailto:") || target.is_empty() {
                    continue;
                }
                checked += 1;
                let (path, anchor) = match target.split_once('#') {
                    Some((p, a)) => (p, Some(a)),
                    None => (target.as_str(), None),
                };
                let rel = if path.is_empty() {
                    PathBuf::from(&file)
                } else {
                    dir.join(path)
                };
                let full = root.join(&rel);
                if !full.exists() {
                    broken.push(format!(
                        "{file}:{line_no}: {target}: no file {}",
                        rel.display()
                    ));
                    continue;
                }
                if let Some(anchor) = anchor {
                    let md = std::fs::read_to_string(&full).unwrap_or_default();
                    if !anchors(&md).contains(anchor) {
                        broken.push(format!(
                            "{file}:{line_no}: {target}: no heading #{anchor} in {}",
                            rel.display()
                        ));
                    }
                }
            }
        }
    }
    assert!(checked >= 20, "only {checked} relative links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn cells_escape_pipes_and_tags() {
    assert_eq!(
        cell("?format=pprof|svg <kind>.svg `a|b <c>`"),
        "?format=pprof\\|svg \\<kind>.svg `a\\|b <c>`"
    );
}

#[test]
fn slugs_are_githubs() {
    assert_eq!(
        slug("CSRF: same-origin requests only"),
        "csrf-same-origin-requests-only"
    );
    assert_eq!(slug("Build: per cargo feature"), "build-per-cargo-feature");
    assert_eq!(
        slug("Profiles: parameters, labels, headers"),
        "profiles-parameters-labels-headers"
    );
    assert_eq!(
        anchors("# A\n## A\n```\n# not a heading\n```\n## `x` y\n"),
        ["a", "a-1", "x-y"].map(String::from).into()
    );
}
