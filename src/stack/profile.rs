//! The one stack profile type: what the CPU, wall-clock and heap profilers (and any profiler to
//! come) produce, and its three encodings — gzipped `profile.proto`, folded text and an SVG
//! flamegraph — written once here.
//!
//! A [`Profile`] is a list of [`Sample`]s, each a stack (innermost frame first, as every stack
//! in prodbg), a value per [`ValueType`] and string labels, plus the pprof mappings of the
//! modules its addresses fall in. The flamegraph counts one of the values and may put a root
//! frame (a thread name, a thread state) under every stack.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use crate::encode::{flamegraph, pprof as pb};
use crate::stack::offline::{pprof_locations, PprofMapping};
use crate::stack::Frame;

/// What one of a sample's values measures, in pprof's terms: `("cpu", "nanoseconds")`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ValueType {
    /// What is counted: `samples`, `cpu`, `wall`, `inuse_space` …
    pub(crate) kind: &'static str,
    /// Its unit: `count`, `nanoseconds`, `bytes`.
    pub(crate) unit: &'static str,
}

impl ValueType {
    /// `samples/count`: how many samples saw a stack.
    pub(crate) const SAMPLES: ValueType = ValueType {
        kind: "samples",
        unit: "count",
    };
}

/// What kind of address a stack's innermost frame has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leaf {
    /// The interrupted instruction itself (CPU and wall samples): kept as is.
    Interrupted,
    /// A return address, like every caller frame (allocation stacks): pprof gets it minus
    /// one, inside the call instruction.
    Returns,
}

/// One distinct stack and what was measured on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sample {
    /// The flamegraph's root frame for this stack (the thread's name or state), if any.
    pub(crate) root: Option<String>,
    /// Frames, innermost first.
    pub(crate) frames: Vec<Frame>,
    /// pprof string labels, e.g. `thread`, `state`, `span`.
    pub(crate) labels: Vec<(&'static str, String)>,
    /// One value per [`Profile::value_types`] entry.
    pub(crate) values: Vec<i64>,
}

impl Sample {
    /// The value of label `key`, if the sample has it.
    pub(crate) fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A finished stack profile of any kind.
#[derive(Debug, Clone)]
pub(crate) struct Profile {
    /// The kind, as in file names and the console's kept results: `cpu`, `wall`, `heap`.
    pub(crate) kind: &'static str,
    /// What each sample's values measure, in order.
    pub(crate) value_types: &'static [ValueType],
    /// The value `go tool pprof` shows first (its `kind`).
    pub(crate) default_value: &'static str,
    /// The value the flamegraph and folded text count (an index into `value_types`), and the
    /// word its tooltips use for it (`samples`, `bytes`).
    pub(crate) flame_value: (usize, &'static str),
    /// pprof's period: what one sample stands for, e.g. 10 ms of `cpu`.
    pub(crate) period: (ValueType, i64),
    /// What the innermost frames' addresses are.
    pub(crate) leaf: Leaf,
    /// When the profile's window started.
    pub(crate) start_time: SystemTime,
    /// How long the window was (zero for a snapshot).
    pub(crate) duration: Duration,
    /// Whether the frames carry functions, files and lines (else addresses only: the pprof
    /// mappings say so, for off-host symbolization).
    pub(crate) symbolized: bool,
    /// The executable segments of the loaded modules.
    pub(crate) mappings: Vec<PprofMapping>,
    /// Distinct stacks.
    pub(crate) samples: Vec<Sample>,
    /// What the profile is, for the flamegraph's title after the service's name, e.g.
    /// `CPU 10 s at 99 Hz`.
    pub(crate) describe: String,
    /// Figures the producer reports with the profile (`x-prodbg-*` response headers).
    pub(crate) figures: Vec<(&'static str, String)>,
    /// Problems worth telling the reader, most important first.
    pub(crate) warnings: Vec<String>,
}

impl Profile {
    /// A sampled profile taken at `frequency_hz` from `start_time` for `duration`: each sample
    /// counts `samples/count` and `<measure>/nanoseconds` (count × period; the default),
    /// the flamegraph counts samples, leaves are interrupted instructions. The producer fills
    /// in its samples, description, figures and warnings.
    pub(crate) fn sampled(
        kind: &'static str,
        value_types: &'static [ValueType; 2],
        frequency_hz: u32,
        (start_time, duration): (SystemTime, Duration),
        symbolized: bool,
        mappings: Vec<PprofMapping>,
    ) -> Profile {
        Profile {
            kind,
            value_types,
            default_value: value_types[1].kind,
            flame_value: (0, "samples"),
            period: (value_types[1], Self::period_ns(frequency_hz)),
            leaf: Leaf::Interrupted,
            start_time,
            duration,
            symbolized,
            mappings,
            samples: Vec::new(),
            describe: String::new(),
            figures: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Nanoseconds one sample at `frequency_hz` stands for.
    pub(crate) fn period_ns(frequency_hz: u32) -> i64 {
        1_000_000_000 / i64::from(frequency_hz.max(1))
    }

    /// The sum of value `index` over all samples.
    pub(crate) fn total(&self, index: usize) -> i64 {
        self.samples
            .iter()
            .map(|s| s.values.get(index).copied().unwrap_or(0))
            .fold(0i64, i64::saturating_add)
    }

    /// Keeps only the samples taken inside a `tracing` span named `span` (`?span=`).
    pub(crate) fn retain_span(&mut self, span: &str) {
        self.samples.retain(|s| s.label("span") == Some(span));
    }

    /// The flamegraph title: `service`, what the profile is, and the flamegraph's total.
    pub(crate) fn title(&self, service: &str) -> String {
        let (index, unit) = self.flame_value;
        let total = self.total(index);
        let amount = if unit == "bytes" {
            format!("{:.1} MB", total as f64 / 1e6)
        } else {
            format!("{total} {unit}")
        };
        format!("{service}: {}, {amount}", self.describe)
    }

    /// Gzipped `profile.proto`: the value types, period, mappings (path, file offset, build
    /// id), locations with their functions, files and lines (inlined functions as extra lines
    /// of their location) when symbolized, and each sample's labels. Caller addresses are
    /// return addresses minus one (inside the call), as pprof tools expect.
    pub(crate) fn pprof_gz(&self) -> Vec<u8> {
        let types: Vec<(&str, &str)> = self.value_types.iter().map(|t| (t.kind, t.unit)).collect();
        let (period_type, period) = self.period;
        let mut b = pb::ProfileBuilder::new(&types, (period_type.kind, period_type.unit), period);
        b.default_sample_type(self.default_value);
        for m in &self.mappings {
            b.mapping_spec(&pb::MappingSpec {
                start: m.memory_start,
                limit: m.memory_limit,
                offset: m.file_offset,
                path: &m.filename,
                build_id: m.build_id.as_deref().unwrap_or(""),
                symbolized: self.symbolized,
            });
        }
        for s in &self.samples {
            let locations = pprof_locations(
                &mut b,
                &s.frames,
                self.symbolized,
                self.leaf == Leaf::Interrupted,
            );
            let labels: Vec<(&str, &str)> =
                s.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            b.sample(locations, s.values.clone(), &labels);
        }
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        let start = self
            .start_time
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(nanos)
            .unwrap_or(0);
        pb::encode_gz(&b.finish(start, nanos(self.duration)))
    }

    /// Folded stacks, one `root;outer;…;leaf value` line per stack: the text inferno,
    /// flamegraph.pl and speedscope read.
    pub(crate) fn folded(&self) -> String {
        flamegraph::folded_text(&self.folded_stacks())
    }

    /// An SVG flamegraph (inferno: searchable, zoomable) titled `title`.
    pub(crate) fn svg(&self, title: &str) -> Result<Vec<u8>, String> {
        flamegraph::svg(&self.folded_stacks(), title, self.flame_value.1)
    }

    /// The stacks by name, root first, with the flame value; stacks whose names are the same
    /// (different addresses in one function, a heap stack's trimmed frames) merged, in the
    /// order they first appear.
    fn folded_stacks(&self) -> Vec<flamegraph::FoldedStack> {
        let index = self.flame_value.0;
        let mut out: Vec<flamegraph::FoldedStack> = Vec::with_capacity(self.samples.len());
        let mut seen: HashMap<Vec<String>, usize> = HashMap::with_capacity(self.samples.len());
        for s in &self.samples {
            let frames: Vec<String> = s
                .root
                .iter()
                .cloned()
                .chain(s.frames.iter().rev().map(|f| f.name().to_string()))
                .collect();
            let value = u64::try_from(s.values.get(index).copied().unwrap_or(0)).unwrap_or(0);
            match seen.get(&frames) {
                Some(&i) => out[i].1 += value,
                None => {
                    seen.insert(frames.clone(), out.len());
                    out.push((frames, value));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TYPES: &[ValueType; 2] = &[
        ValueType::SAMPLES,
        ValueType {
            kind: "cpu",
            unit: "nanoseconds",
        },
    ];

    fn frame(name: &str, address: u64) -> Frame {
        Frame {
            function: Some(name.into()),
            ..Frame::unknown(address)
        }
    }

    fn profile() -> Profile {
        let sample = |root: &str, span: Option<&str>, leaf: &str, n: i64| Sample {
            root: Some(root.into()),
            frames: vec![frame(leaf, 0x1010), frame("main", 0x2020)],
            labels: std::iter::once(("thread", root.to_string()))
                .chain(span.map(|s| ("span", s.to_string())))
                .collect(),
            values: vec![n, n * 10_000_000],
        };
        Profile {
            kind: "cpu",
            value_types: TYPES,
            default_value: "cpu",
            flame_value: (0, "samples"),
            period: (TYPES[1], 10_000_000),
            leaf: Leaf::Interrupted,
            start_time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000),
            duration: Duration::from_secs(2),
            symbolized: true,
            mappings: Vec::new(),
            samples: vec![
                sample("worker-1", Some("checkout"), "hot", 7),
                sample("worker-2", None, "cold", 3),
            ],
            describe: "CPU 2 s at 99 Hz".into(),
            figures: Vec::new(),
            warnings: Vec::new(),
        }
    }

    #[test]
    fn folded_puts_the_root_first_and_the_leaf_last_and_merges_same_names() {
        let mut p = profile();
        assert_eq!(p.folded(), "worker-1;main;hot 7\nworker-2;main;cold 3\n");
        let mut again = p.samples[1].clone();
        again.frames[0].address += 4; // another address in the same function
        p.samples.push(again);
        assert_eq!(p.folded(), "worker-1;main;hot 7\nworker-2;main;cold 6\n");
    }

    #[test]
    fn span_filter_keeps_only_that_span_and_the_title_counts_what_is_left() {
        let mut p = profile();
        assert_eq!(p.title("svc"), "svc: CPU 2 s at 99 Hz, 10 samples");
        p.retain_span("checkout");
        assert_eq!(p.samples.len(), 1);
        assert_eq!(p.total(1), 70_000_000);
        assert_eq!(p.title("svc"), "svc: CPU 2 s at 99 Hz, 7 samples");
    }

    #[test]
    fn pprof_carries_types_labels_values_and_times() {
        use prost::Message as _;
        let gz = profile().pprof_gz();
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut raw).unwrap();
        let p = pb::Profile::decode(&raw[..]).unwrap();
        let s = |i: i64| p.string_table[i as usize].as_str();
        let types: Vec<_> = p.sample_type.iter().map(|t| (s(t.ty), s(t.unit))).collect();
        assert_eq!(types, [("samples", "count"), ("cpu", "nanoseconds")]);
        assert_eq!(s(p.default_sample_type), "cpu");
        assert_eq!(p.period, 10_000_000);
        assert_eq!(p.time_nanos, 1_000_000_000_000);
        assert_eq!(p.duration_nanos, 2_000_000_000);
        assert_eq!(p.sample[0].value, [7, 70_000_000]);
        let labels: Vec<_> = p.sample[0]
            .label
            .iter()
            .map(|l| (s(l.key), s(l.str)))
            .collect();
        assert_eq!(labels, [("thread", "worker-1"), ("span", "checkout")]);
        // The leaf keeps the interrupted address; its caller's is inside the call.
        let address = |id: u64| p.location.iter().find(|l| l.id == id).unwrap().address;
        assert_eq!(address(p.sample[0].location_id[0]), 0x1010);
        assert_eq!(address(p.sample[0].location_id[1]), 0x201f);
    }

    #[test]
    fn svg_counts_the_flame_value_in_its_unit() {
        let svg = String::from_utf8(profile().svg("t").unwrap()).unwrap();
        assert!(svg.contains("worker-1"), "{svg}");
        assert!(svg.contains("samples"), "{svg}");
    }
}
