//! Folded stacks → inferno SVG flamegraph.

use std::fmt::Write as _;

/// One stack and its weight, root first: `(["main", "run", "hot"], 42)`.
pub(crate) type FoldedStack = (Vec<String>, u64);

/// Renders folded stacks as the text format `frame;frame;frame weight\n`,
/// which inferno, Brendan Gregg's flamegraph.pl and speedscope all read.
pub(crate) fn folded_text(stacks: &[FoldedStack]) -> String {
    let mut out = String::new();
    for (frames, weight) in stacks {
        for (i, frame) in frames.iter().enumerate() {
            if i > 0 {
                out.push(';');
            }
            // ';' separates frames and a trailing number is the weight: keep both unambiguous.
            out.push_str(&frame.replace(';', ":"));
        }
        if frames.is_empty() {
            out.push_str("[unknown]");
        }
        let _ = writeln!(out, " {weight}");
    }
    out
}

/// Renders folded stacks as an SVG flamegraph with the given title.
///
/// `count_name` labels the weight in tooltips (`samples`, `bytes`).
pub(crate) fn svg(
    stacks: &[FoldedStack],
    title: &str,
    count_name: &str,
) -> Result<Vec<u8>, String> {
    let text = folded_text(stacks);
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_string();
    options.count_name = count_name.to_string();
    let mut out = Vec::new();
    if text.is_empty() {
        // inferno refuses empty input; an empty profile is still a valid answer.
        options.subtitle = Some("no samples were collected".to_string());
        inferno::flamegraph::from_lines(&mut options, std::iter::once("[no samples] 1"), &mut out)
    } else {
        inferno::flamegraph::from_lines(&mut options, text.lines(), &mut out)
    }
    .map_err(|e| format!("flamegraph rendering failed: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_text_joins_frames_and_escapes_separators() {
        let stacks = vec![(vec!["main".into(), "a;b".into()], 3), (vec![], 1)];
        assert_eq!(folded_text(&stacks), "main;a:b 3\n[unknown] 1\n");
    }

    #[test]
    fn svg_contains_title_and_frames() {
        let stacks = vec![(vec!["main".into(), "hot_function_xyz".into()], 5)];
        let svg = String::from_utf8(svg(&stacks, "my title", "samples").unwrap()).unwrap();
        assert!(svg.contains("my title"));
        assert!(svg.contains("hot_function_xyz"));
    }

    #[test]
    fn svg_of_empty_profile_is_valid() {
        let svg = String::from_utf8(svg(&[], "empty", "samples").unwrap()).unwrap();
        assert!(svg.contains("no samples"));
    }
}
