//! A small builder for `profile.proto` (the format `go tool pprof`, Parca and Pyroscope read).
//!
//! It interns strings, functions and locations so that a profile with many samples sharing
//! frames stays small, and always writes one mapping that says "already symbolized", so
//! `go tool pprof` shows the embedded names instead of trying to find the binary.

use std::collections::HashMap;

use pprof::protos::{self, Message as _};

/// One source position in a [`location`](ProfileBuilder::location): a function and a line.
#[derive(Debug, Clone, Copy)]
pub struct LineSpec<'a> {
    /// Demangled function name, e.g. `my_crate::hot_loop`.
    pub function: &'a str,
    /// Raw (mangled) symbol name; may equal `function`.
    pub system_name: &'a str,
    /// Source file; empty when unknown.
    pub file: &'a str,
    /// Line number, 1-based; 0 when unknown.
    pub line: u32,
}

/// Builds a [`protos::Profile`] step by step. See the module docs.
pub struct ProfileBuilder {
    profile: protos::Profile,
    strings: HashMap<String, i64>,
    functions: HashMap<(i64, i64, i64), u64>,
    locations: HashMap<u64, u64>,
}

impl ProfileBuilder {
    /// Starts a profile whose samples carry one value per `(type, unit)` in `sample_types`,
    /// sampled every `period` units of `period_type`.
    pub fn new(sample_types: &[(&str, &str)], period_type: (&str, &str), period: i64) -> Self {
        let mut b = Self {
            profile: protos::Profile::default(),
            strings: HashMap::new(),
            functions: HashMap::new(),
            locations: HashMap::new(),
        };
        b.string(""); // the string table must start with ""
        let sample_type = sample_types
            .iter()
            .map(|(ty, unit)| b.value_type(ty, unit))
            .collect();
        b.profile.sample_type = sample_type;
        b.profile.period_type = Some(b.value_type(period_type.0, period_type.1));
        b.profile.period = period;
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let filename = b.string(&exe);
        b.profile.mapping.push(protos::Mapping {
            id: 1,
            memory_start: 0,
            memory_limit: u64::MAX,
            filename,
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
            ..Default::default()
        });
        b
    }

    fn value_type(&mut self, ty: &str, unit: &str) -> protos::ValueType {
        protos::ValueType {
            ty: self.string(ty),
            unit: self.string(unit),
        }
    }

    /// Interns `s` and returns its index in the string table.
    pub fn string(&mut self, s: &str) -> i64 {
        if let Some(&id) = self.strings.get(s) {
            return id;
        }
        let id = self.profile.string_table.len() as i64;
        self.profile.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), id);
        id
    }

    /// Returns the id of the location at code address `address`, creating it on first use
    /// with `lines` (innermost inlined function first, the physical function last, as
    /// profile.proto wants). Later calls with the same address reuse the first `lines`.
    pub fn location(&mut self, address: u64, lines: &[LineSpec<'_>]) -> u64 {
        if let Some(&id) = self.locations.get(&address) {
            return id;
        }
        let line = lines
            .iter()
            .map(|l| protos::Line {
                function_id: self.function(l),
                line: i64::from(l.line),
            })
            .collect();
        let id = self.profile.location.len() as u64 + 1;
        self.profile.location.push(protos::Location {
            id,
            mapping_id: 1,
            address,
            line,
            is_folded: false,
        });
        self.locations.insert(address, id);
        id
    }

    fn function(&mut self, l: &LineSpec<'_>) -> u64 {
        let key = (
            self.string(l.function),
            self.string(l.system_name),
            self.string(l.file),
        );
        if let Some(&id) = self.functions.get(&key) {
            return id;
        }
        let id = self.profile.function.len() as u64 + 1;
        self.profile.function.push(protos::Function {
            id,
            name: key.0,
            system_name: key.1,
            filename: key.2,
            start_line: 0,
        });
        self.functions.insert(key, id);
        id
    }

    /// Adds a sample: `locations` leaf first, one value per sample type, string labels.
    pub fn sample(&mut self, locations: Vec<u64>, values: Vec<i64>, labels: &[(&str, &str)]) {
        let label = labels
            .iter()
            .map(|(k, v)| protos::Label {
                key: self.string(k),
                str: self.string(v),
                ..Default::default()
            })
            .collect();
        self.profile.sample.push(protos::Sample {
            location_id: locations,
            value: values,
            label,
        });
    }

    /// Finishes the profile: `time_nanos` is the start (ns since the Unix epoch),
    /// `duration_nanos` how long it covers.
    pub fn finish(mut self, time_nanos: i64, duration_nanos: i64) -> protos::Profile {
        self.profile.time_nanos = time_nanos;
        self.profile.duration_nanos = duration_nanos;
        self.profile
    }
}

/// Encodes a profile as gzipped protobuf, the body `go tool pprof` expects.
pub fn encode_gz(profile: &protos::Profile) -> Vec<u8> {
    super::gzip::gzip(&profile.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interns_strings_functions_and_locations() {
        let mut b = ProfileBuilder::new(&[("samples", "count")], ("cpu", "nanoseconds"), 10);
        let line = LineSpec {
            function: "f",
            system_name: "_f",
            file: "a.rs",
            line: 3,
        };
        let l1 = b.location(0x10, &[line]);
        let l2 = b.location(0x10, &[line]);
        let l3 = b.location(0x20, &[line]);
        assert_eq!(l1, l2);
        assert_ne!(l1, l3);
        b.sample(vec![l1], vec![1], &[("thread", "main")]);
        let p = b.finish(1, 2);
        assert_eq!(p.string_table[0], "");
        assert_eq!(p.function.len(), 1);
        assert_eq!(p.location.len(), 2);
        assert_eq!(p.string_table[p.sample[0].label[0].str as usize], "main");
        assert_eq!(p.duration_nanos, 2);
    }
}
