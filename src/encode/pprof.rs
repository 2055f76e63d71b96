//! `profile.proto`, the format `go tool pprof`, Parca and Pyroscope read, and a builder for it.
//!
//! The messages mirror [google/pprof's `profile.proto`] field for field (same tags), encoded
//! with `prost`. [`ProfileBuilder`] interns strings, functions and locations so that a profile
//! with many samples sharing frames stays small; both the CPU and the heap probe build their
//! profiles with it. Profiles carry their own symbols (every mapping says so), so
//! `go tool pprof` shows the embedded names instead of looking for the binary.
//!
//! [google/pprof's `profile.proto`]: https://github.com/google/pprof/blob/main/proto/profile.proto

use std::collections::HashMap;

use prost::Message as _;

/// A whole profile. Every `i64` documented as a string is an index into `string_table`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Profile {
    /// What each value of a sample measures, in order.
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    /// The samples.
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    /// The binaries and libraries the locations belong to.
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    /// Code addresses, referenced from samples by id.
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    /// Functions, referenced from lines by id.
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    /// All strings of the profile; the first is always `""`.
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    /// String: regexp of frames to drop from samples, with their callees.
    #[prost(int64, tag = "7")]
    pub drop_frames: i64,
    /// String: regexp of frames to keep even if they match `drop_frames`.
    #[prost(int64, tag = "8")]
    pub keep_frames: i64,
    /// When the profile was collected, in nanoseconds since the Unix epoch.
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    /// How long the profile covers, in nanoseconds.
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    /// What `period` counts.
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    /// Distance between samples, in `period_type` units.
    #[prost(int64, tag = "12")]
    pub period: i64,
    /// Strings: free-form comments.
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    /// String: the `sample_type` a viewer shows by default.
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
    /// String: a URL documenting this kind of profile.
    #[prost(int64, tag = "15")]
    pub doc_url: i64,
}

/// A measured quantity and its unit, e.g. `cpu`/`nanoseconds`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub(crate) struct ValueType {
    /// String: the quantity.
    #[prost(int64, tag = "1")]
    pub ty: i64,
    /// String: its unit.
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

/// One stack and its values.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Sample {
    /// The stack as location ids, leaf first.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    /// One value per [`Profile::sample_type`].
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    /// Extra information, e.g. the thread.
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

/// A key and a string or number value attached to a sample.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub(crate) struct Label {
    /// String: the key.
    #[prost(int64, tag = "1")]
    pub key: i64,
    /// String: the value, when it is a string.
    #[prost(int64, tag = "2")]
    pub str: i64,
    /// The value, when it is a number.
    #[prost(int64, tag = "3")]
    pub num: i64,
    /// String: the unit of `num`.
    #[prost(int64, tag = "4")]
    pub num_unit: i64,
}

/// A binary or library mapped into the process.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub(crate) struct Mapping {
    /// Unique, non-zero id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// First address of the mapping.
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    /// First address past the mapping.
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    /// Offset in the file at which the mapping starts.
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    /// String: path of the file.
    #[prost(int64, tag = "5")]
    pub filename: i64,
    /// String: the file's build id.
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    /// The locations in this mapping carry function names.
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    /// … and file names.
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    /// … and line numbers.
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    /// … and inlined functions.
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

/// A code address and the source lines it belongs to.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Location {
    /// Unique, non-zero id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Id of the [`Mapping`] holding `address`; 0 when none does.
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    /// The code address.
    #[prost(uint64, tag = "3")]
    pub address: u64,
    /// Innermost inlined function first, the physical function last.
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
    /// Several addresses were merged into this location.
    #[prost(bool, tag = "5")]
    pub is_folded: bool,
}

/// A function and a line in it.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub(crate) struct Line {
    /// Id of the [`Function`].
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    /// 1-based line number; 0 when unknown.
    #[prost(int64, tag = "2")]
    pub line: i64,
    /// 1-based column number; 0 when unknown.
    #[prost(int64, tag = "3")]
    pub column: i64,
}

/// A function.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub(crate) struct Function {
    /// Unique, non-zero id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// String: human-readable name, e.g. `my_crate::hot_loop`.
    #[prost(int64, tag = "2")]
    pub name: i64,
    /// String: name as in the binary (mangled).
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    /// String: source file.
    #[prost(int64, tag = "4")]
    pub filename: i64,
    /// Line where the function starts; 0 when unknown.
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}

/// One source position in a [`location`](ProfileBuilder::location): a function and a line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LineSpec<'a> {
    /// Demangled function name, e.g. `my_crate::hot_loop`.
    pub function: &'a str,
    /// Raw (mangled) symbol name; may equal `function`.
    pub system_name: &'a str,
    /// Source file; empty when unknown.
    pub file: &'a str,
    /// Line number, 1-based; 0 when unknown.
    pub line: u32,
}

/// A mapping for [`ProfileBuilder::mapping_spec`]: a file mapped at `start..limit`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MappingSpec<'a> {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub limit: u64,
    /// File offset of `start`.
    pub offset: u64,
    /// The file's path.
    pub path: &'a str,
    /// The file's build id (hex), or empty.
    pub build_id: &'a str,
    /// Whether the locations of this mapping carry functions, files and lines.
    pub symbolized: bool,
}

/// Builds a [`Profile`] step by step. See the module docs.
pub(crate) struct ProfileBuilder {
    profile: Profile,
    strings: HashMap<String, i64>,
    functions: HashMap<(i64, i64, i64), u64>,
    locations: HashMap<(u64, usize), u64>,
}

impl ProfileBuilder {
    /// Starts a profile whose samples carry one value per `(type, unit)` in `sample_types`,
    /// sampled every `period` units of `period_type`. It has no mappings until
    /// [`mapping`](Self::mapping) adds them.
    pub(crate) fn new(
        sample_types: &[(&str, &str)],
        period_type: (&str, &str),
        period: i64,
    ) -> Self {
        let mut b = Self {
            profile: Profile::default(),
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
        b
    }

    fn value_type(&mut self, ty: &str, unit: &str) -> ValueType {
        ValueType {
            ty: self.string(ty),
            unit: self.string(unit),
        }
    }

    /// Interns `s` and returns its index in the string table.
    pub(crate) fn string(&mut self, s: &str) -> i64 {
        if let Some(&id) = self.strings.get(s) {
            return id;
        }
        let id = self.profile.string_table.len() as i64;
        self.profile.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), id);
        id
    }

    /// Names the sample type a viewer shows first (one of `sample_types`' types).
    pub(crate) fn default_sample_type(&mut self, ty: &str) {
        self.profile.default_sample_type = self.string(ty);
    }

    /// Adds a mapping described by `m`; returns its id. Locations belong to the first mapping
    /// that holds their address. An unsymbolized mapping (`symbolized: false`) tells
    /// `go tool pprof` and Parca to symbolize its locations themselves (from the file found by
    /// path or build id, or through `/debug/pprof/symbol`).
    pub(crate) fn mapping_spec(&mut self, m: &MappingSpec<'_>) -> u64 {
        let id = self.profile.mapping.len() as u64 + 1;
        let filename = self.string(m.path);
        let build_id = self.string(m.build_id);
        self.profile.mapping.push(Mapping {
            id,
            memory_start: m.start,
            memory_limit: m.limit,
            file_offset: m.offset,
            filename,
            build_id,
            has_functions: m.symbolized,
            has_filenames: m.symbolized,
            has_line_numbers: m.symbolized,
            has_inline_frames: m.symbolized,
        });
        id
    }

    /// Returns the id of the location at code address `address`, creating it on first use
    /// with `lines` (innermost inlined function first, the physical function last, as
    /// profile.proto wants).
    ///
    /// A location is known by its address and its number of lines: for one address, callers
    /// pass that address's lines, or those lines without some innermost ones (the heap
    /// profile leaves out inlined allocation plumbing that way). Later calls reuse the
    /// first `lines` given.
    pub(crate) fn location(&mut self, address: u64, lines: &[LineSpec<'_>]) -> u64 {
        if let Some(&id) = self.locations.get(&(address, lines.len())) {
            return id;
        }
        let line = lines
            .iter()
            .map(|l| Line {
                function_id: self.function(l),
                line: i64::from(l.line),
                column: 0,
            })
            .collect();
        let mapping_id = self
            .profile
            .mapping
            .iter()
            .find(|m| (m.memory_start..m.memory_limit).contains(&address))
            .map_or(0, |m| m.id);
        let id = self.profile.location.len() as u64 + 1;
        self.profile.location.push(Location {
            id,
            mapping_id,
            address,
            line,
            is_folded: false,
        });
        self.locations.insert((address, lines.len()), id);
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
        self.profile.function.push(Function {
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
    pub(crate) fn sample(
        &mut self,
        locations: Vec<u64>,
        values: Vec<i64>,
        labels: &[(&str, &str)],
    ) {
        let label = labels
            .iter()
            .map(|(k, v)| Label {
                key: self.string(k),
                str: self.string(v),
                ..Default::default()
            })
            .collect();
        self.profile.sample.push(Sample {
            location_id: locations,
            value: values,
            label,
        });
    }

    /// Finishes the profile: `time_nanos` is the start (ns since the Unix epoch),
    /// `duration_nanos` how long it covers.
    pub(crate) fn finish(mut self, time_nanos: i64, duration_nanos: i64) -> Profile {
        self.profile.time_nanos = time_nanos;
        self.profile.duration_nanos = duration_nanos;
        self.profile
    }
}

/// Encodes a profile as gzipped protobuf, the body `go tool pprof` expects.
pub(crate) fn encode_gz(profile: &Profile) -> Vec<u8> {
    super::gzip::gzip(&profile.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: LineSpec<'static> = LineSpec {
        function: "f",
        system_name: "_f",
        file: "a.rs",
        line: 3,
    };

    #[test]
    fn interns_strings_functions_and_locations() {
        let mut b = ProfileBuilder::new(&[("samples", "count")], ("cpu", "nanoseconds"), 10);
        let l1 = b.location(0x10, &[LINE]);
        let l2 = b.location(0x10, &[LINE]);
        let l3 = b.location(0x20, &[LINE]);
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

    #[test]
    fn trimmed_lines_make_another_location_in_its_mapping() {
        let mut b = ProfileBuilder::new(&[("space", "bytes")], ("space", "bytes"), 1);
        let inner = LineSpec {
            function: "inlined",
            ..LINE
        };
        let mapping = MappingSpec {
            start: 0x100,
            limit: 0x200,
            offset: 0x1000,
            path: "/bin/svc",
            build_id: "",
            symbolized: true,
        };
        assert_eq!(b.mapping_spec(&mapping), 1);
        let full = b.location(0x150, &[inner, LINE]);
        let trimmed = b.location(0x150, &[LINE]);
        let outside = b.location(0x250, &[]);
        assert_ne!(full, trimmed);
        b.default_sample_type("space");
        let p = b.finish(0, 0);
        let mappings: Vec<u64> = p.location.iter().map(|l| l.mapping_id).collect();
        assert_eq!(mappings, [1, 1, 0]);
        assert_eq!(p.location[outside as usize - 1].address, 0x250);
        assert_eq!(p.location[trimmed as usize - 1].line.len(), 1);
        assert_eq!(p.string_table[p.default_sample_type as usize], "space");
        assert_eq!(p.string_table[p.mapping[0].filename as usize], "/bin/svc");
    }

    /// Field numbers are the wire format: check a few against hand-encoded bytes.
    #[test]
    fn encodes_profile_proto_tags() {
        let p = Profile {
            period: 300,
            string_table: vec![String::new()],
            sample: vec![Sample {
                location_id: vec![1, 2],
                ..Default::default()
            }],
            ..Default::default()
        };
        // sample (2) { location_id (1, packed [1, 2]) }, string_table (6) "", period (12) 300
        let expected = [
            0x12, 0x04, 0x0a, 0x02, 0x01, 0x02, 0x32, 0x00, 0x60, 0xac, 0x02,
        ];
        assert_eq!(p.encode_to_vec(), expected);
        assert_eq!(Profile::decode(&expected[..]).unwrap(), p);
    }
}
