//! Resolving the addresses of one compilation unit: one pass over its line program (file and
//! line of each address) and one over its DIEs (the function and the chain of inlined calls
//! that contain each address). Both passes stop as soon as every target is settled. Nothing
//! is indexed or kept: the unit's state is dropped when [`resolve`] returns.

use std::collections::HashMap;

use gimli::{constants, AttributeValue, DebugInfoOffset, UnitOffset};

use super::strings::Strings;
use super::{demangle, Slice, Symbol};

/// What resolving a unit needs besides the unit.
pub(crate) struct Ctx<'a, 'b> {
    pub(crate) dwarf: &'b gimli::Dwarf<Slice<'a>>,
    pub(crate) strings: &'b Strings<'b>,
    /// Sorted start offsets of the units, to find the target of a cross-unit reference.
    pub(crate) unit_starts: &'b [DebugInfoOffset],
}

/// A function DIE that contains at least one target address.
struct Node<'a> {
    parent: Option<usize>,
    inlined: bool,
    name: Name<'a>,
    call_file: Option<u64>,
    call_line: u32,
}

/// A function's name attributes (raw values; strings are read only when needed).
#[derive(Clone, Copy, Default)]
struct Name<'a> {
    linkage: Option<AttributeValue<Slice<'a>>>,
    name: Option<AttributeValue<Slice<'a>>>,
    reference: Option<AttributeValue<Slice<'a>>>,
}

type Resolved = (Option<String>, Option<String>);

/// Frames (innermost first) for each of `targets` (sorted, unique, all in `unit`); `None`
/// where neither a function DIE nor the line table covers the address.
pub(crate) fn resolve<'a>(
    ctx: &Ctx<'a, '_>,
    unit: &gimli::Unit<Slice<'a>>,
    targets: &[u64],
) -> gimli::Result<Vec<Option<Vec<Symbol>>>> {
    let mut files: HashMap<u64, Option<String>> = HashMap::new();
    let lines = line_of_each(ctx, unit, targets, &mut files)?;
    let (nodes, innermost) = function_chains(ctx, unit, targets)?;
    let mut names: HashMap<usize, Resolved> = HashMap::new();
    let mut by_ref: HashMap<(u64, usize), Resolved> = HashMap::new();
    let mut out = Vec::with_capacity(targets.len());
    for (i, leaf) in innermost.iter().enumerate() {
        let Some(mut n) = *leaf else {
            // Line tables without function DIEs (C built with -gline-tables-only): keep the
            // location; the caller names the function from the symbol table.
            out.push(lines[i].clone().map(|(file, line)| {
                vec![Symbol {
                    function: None,
                    linkage_name: None,
                    file,
                    line,
                    inlined: false,
                }]
            }));
            continue;
        };
        let (mut file, mut line) = lines[i].clone().unwrap_or((None, None));
        let mut frames = Vec::new();
        loop {
            let node = &nodes[n];
            let (function, linkage_name) = names
                .entry(n)
                .or_insert_with(|| name_of(ctx, unit, &node.name, 0, &mut by_ref))
                .clone();
            frames.push(Symbol {
                function,
                linkage_name,
                file: file.take(),
                line: line.take(),
                inlined: node.inlined,
            });
            file = node.call_file.and_then(|f| {
                files
                    .entry(f)
                    .or_insert_with(|| file_path(ctx, unit, f))
                    .clone()
            });
            line = (node.call_line != 0).then_some(node.call_line);
            match node.parent {
                Some(p) if frames.len() < 256 => n = p,
                _ => break,
            }
        }
        if let Some(last) = frames.last_mut() {
            last.inlined = false;
        }
        out.push(Some(frames));
    }
    Ok(out)
}

/// File and line of each target, from the unit's line program (streamed, not stored).
#[allow(clippy::type_complexity)]
fn line_of_each<'a>(
    ctx: &Ctx<'a, '_>,
    unit: &gimli::Unit<Slice<'a>>,
    targets: &[u64],
    files: &mut HashMap<u64, Option<String>>,
) -> gimli::Result<Vec<Option<(Option<String>, Option<u32>)>>> {
    let mut out = vec![None; targets.len()];
    let Some(program) = unit.line_program.clone() else {
        return Ok(out);
    };
    let mut left = targets.len();
    let mut rows = program.rows();
    let mut prev: Option<(u64, u64, u32)> = None;
    // Rows ascend within a sequence, so the first target not below the previous row only
    // moves forward: O(1) per row instead of a binary search.
    let mut cursor = 0usize;
    while let Some((header, row)) = rows.next_row()? {
        let addr = row.address();
        match prev {
            None => cursor = targets.partition_point(|&t| t < addr),
            Some((pa, pf, pl)) if addr > pa => {
                while targets.get(cursor).is_some_and(|&t| t < pa) {
                    cursor += 1;
                }
                let lo = cursor;
                while targets.get(cursor).is_some_and(|&t| t < addr) {
                    cursor += 1;
                }
                if lo < cursor {
                    let path = files
                        .entry(pf)
                        .or_insert_with(|| header_file_path(ctx, unit, header, pf))
                        .clone();
                    for slot in &mut out[lo..cursor] {
                        if slot.is_none() {
                            left -= 1;
                        }
                        *slot = Some((path.clone(), (pl != 0).then_some(pl)));
                    }
                    if left == 0 {
                        break; // each target's row range is final once seen
                    }
                }
            }
            Some(_) => {}
        }
        prev = if row.end_sequence() {
            None
        } else {
            let line = row
                .line()
                .map_or(0, |l| u32::try_from(l.get()).unwrap_or(u32::MAX));
            Some((addr, row.file_index(), line))
        };
    }
    Ok(out)
}

/// The function DIEs containing each target: all nodes, and each target's innermost node.
#[allow(clippy::type_complexity)]
fn function_chains<'a>(
    ctx: &Ctx<'a, '_>,
    unit: &gimli::Unit<Slice<'a>>,
    targets: &[u64],
) -> gimli::Result<(Vec<Node<'a>>, Vec<Option<usize>>)> {
    let uref = unit.unit_ref(ctx.dwarf);
    let mut nodes: Vec<Node<'a>> = Vec::new();
    let mut innermost: Vec<Option<usize>> = vec![None; targets.len()];
    let mut found = 0usize;
    let mut stack: Vec<(isize, usize)> = Vec::new();
    let mut skip_deeper_than: Option<isize> = None;
    let mut raw = unit.entries_raw(None)?;
    while !raw.is_empty() {
        let depth = raw.next_depth();
        let Some(abbrev) = raw.read_abbreviation()? else {
            continue;
        };
        if let Some(d) = skip_deeper_than {
            if depth > d {
                raw.skip_attributes(abbrev.attributes())?;
                continue;
            }
            skip_deeper_than = None;
        }
        // Leave the functions whose subtree ended (any DIE at their depth or above ends it,
        // namespaces included).
        while stack.last().is_some_and(|&(d, _)| d >= depth) {
            stack.pop();
            // A finished top-level function settles all the targets inside it; top-level
            // functions do not overlap, so once every target is found nothing can change.
            if stack.is_empty() && found == targets.len() {
                return Ok((nodes, innermost));
            }
        }
        let tag = abbrev.tag();
        let is_function =
            tag == constants::DW_TAG_subprogram || tag == constants::DW_TAG_inlined_subroutine;
        // Declarations and abstract instances have no code (no pc attributes): skip them and
        // everything under them without decoding a single attribute.
        let has_code = is_function
            && abbrev.attributes().iter().any(|a| {
                a.name() == constants::DW_AT_low_pc || a.name() == constants::DW_AT_ranges
            });
        if !has_code {
            raw.skip_attributes(abbrev.attributes())?;
            if is_function && abbrev.has_children() {
                skip_deeper_than = Some(depth);
            }
            continue;
        }
        let mut low_pc = None;
        let mut high_pc = None;
        let mut high_is_offset = false;
        let mut ranges = None;
        let mut name = Name::default();
        let mut call_file = None;
        let mut call_line = 0u32;
        for spec in abbrev.attributes() {
            let attr = raw.read_attribute(*spec)?;
            match attr.name() {
                constants::DW_AT_low_pc => low_pc = Some(attr.value()),
                constants::DW_AT_high_pc => match attr.value() {
                    AttributeValue::Udata(off) => {
                        high_pc = Some(AttributeValue::Udata(off));
                        high_is_offset = true;
                    }
                    v => high_pc = Some(v),
                },
                constants::DW_AT_ranges => ranges = Some(attr.value()),
                constants::DW_AT_linkage_name | constants::DW_AT_MIPS_linkage_name => {
                    name.linkage = Some(attr.value());
                }
                constants::DW_AT_name => name.name = Some(attr.value()),
                constants::DW_AT_abstract_origin | constants::DW_AT_specification => {
                    name.reference = Some(attr.value());
                }
                constants::DW_AT_call_file => call_file = attr.udata_value(),
                constants::DW_AT_call_line => {
                    call_line = attr
                        .udata_value()
                        .map_or(0, |l| u32::try_from(l).unwrap_or(u32::MAX));
                }
                _ => {}
            }
        }
        let idx = nodes.len();
        let mut hit = false;
        let mut mark = |begin: u64, end: u64| {
            let first = targets.partition_point(|&t| t < begin);
            for (t, slot) in targets[first..].iter().zip(&mut innermost[first..]) {
                if *t >= end {
                    break;
                }
                if slot.is_none() {
                    found += 1;
                }
                *slot = Some(idx);
                hit = true;
            }
        };
        let address = |v: AttributeValue<Slice<'a>>| uref.attr_address(v).ok().flatten();
        if let (Some(lo), Some(hi)) = (low_pc.and_then(address), high_pc) {
            let end = match hi {
                AttributeValue::Udata(off) if high_is_offset => Some(lo.wrapping_add(off)),
                v => address(v),
            };
            if let Some(end) = end {
                mark(lo, end);
            }
        } else if let Some(r) = ranges {
            if let Some(mut iter) = uref.attr_ranges(r)? {
                while let Some(r) = iter.next()? {
                    mark(r.begin, r.end);
                }
            }
        }
        if hit {
            nodes.push(Node {
                parent: stack.last().map(|&(_, n)| n),
                inlined: tag == constants::DW_TAG_inlined_subroutine,
                name,
                call_file,
                call_line,
            });
            if abbrev.has_children() {
                stack.push((depth, idx));
            }
        } else if abbrev.has_children() {
            // Children's ranges lie inside this DIE's: none of them can contain a target.
            skip_deeper_than = Some(depth);
        }
    }
    Ok((nodes, innermost))
}

/// (demangled, raw) name of a function DIE, following `DW_AT_abstract_origin` /
/// `DW_AT_specification` (a linkage name wins over a plain name, as in addr2line).
fn name_of<'a>(
    ctx: &Ctx<'a, '_>,
    unit: &gimli::Unit<Slice<'a>>,
    name: &Name<'a>,
    depth: u32,
    by_ref: &mut HashMap<(u64, usize), Resolved>,
) -> Resolved {
    if let Some(raw) = name
        .linkage
        .and_then(|v| ctx.strings.get(ctx.dwarf, unit, v))
    {
        return (Some(demangle(&raw)), Some(raw));
    }
    if let Some(r) = name.reference.filter(|_| depth < 8) {
        if let Some(found) = referenced(ctx, unit, r, depth, by_ref) {
            if found.0.is_some() {
                return found;
            }
        }
    }
    (
        name.name.and_then(|v| ctx.strings.get(ctx.dwarf, unit, v)),
        None,
    )
}

/// The resolved name of the DIE `r` refers to, in this unit or (LTO) another one.
fn referenced<'a>(
    ctx: &Ctx<'a, '_>,
    unit: &gimli::Unit<Slice<'a>>,
    r: AttributeValue<Slice<'a>>,
    depth: u32,
    by_ref: &mut HashMap<(u64, usize), Resolved>,
) -> Option<Resolved> {
    let unit_start = unit
        .header
        .offset()
        .to_debug_info_offset(&unit.header)
        .map_or(0, |o| o.0 as u64);
    let local = match r {
        AttributeValue::UnitRef(o) => Some(o),
        AttributeValue::DebugInfoRef(o) => o.to_unit_offset(&unit.header),
        _ => return None,
    };
    if let Some(local) = local {
        let key = (unit_start, local.0);
        if let Some(hit) = by_ref.get(&key) {
            return Some(hit.clone());
        }
        let n = name_attrs(unit, local)?;
        let resolved = name_of(ctx, unit, &n, depth + 1, by_ref);
        by_ref.insert(key, resolved.clone());
        return Some(resolved);
    }
    // Another unit (cross-unit inlining, e.g. ThinLTO). Start from the last known unit at or
    // before the offset and walk unit headers forward (units without code have no
    // `.debug_aranges` entry, so the target's may be missing from `unit_starts`).
    let AttributeValue::DebugInfoRef(target) = r else {
        return None;
    };
    let i = ctx.unit_starts.partition_point(|s| s.0 <= target.0);
    let mut at = i
        .checked_sub(1)
        .map_or(DebugInfoOffset(0), |i| ctx.unit_starts[i]);
    let header = loop {
        let header = ctx.dwarf.unit_header(at).ok()?;
        if target.to_unit_offset(&header).is_some() {
            break header;
        }
        let next = at.0 + header.length_including_self();
        if next <= at.0 || next > target.0 {
            return None;
        }
        at = DebugInfoOffset(next);
    };
    let local = target.to_unit_offset(&header)?;
    let other = ctx.dwarf.unit(header).ok()?;
    let n = name_attrs(&other, local)?;
    Some(name_of(ctx, &other, &n, depth + 1, by_ref))
}

fn name_attrs<'a>(unit: &gimli::Unit<Slice<'a>>, offset: UnitOffset) -> Option<Name<'a>> {
    let entry = unit.entry(offset).ok()?;
    let mut n = Name::default();
    for attr in entry.attrs() {
        match attr.name() {
            constants::DW_AT_linkage_name | constants::DW_AT_MIPS_linkage_name => {
                n.linkage = Some(attr.value())
            }
            constants::DW_AT_name => n.name = Some(attr.value()),
            constants::DW_AT_abstract_origin | constants::DW_AT_specification => {
                n.reference = Some(attr.value())
            }
            _ => {}
        }
    }
    Some(n)
}

fn file_path<'a>(ctx: &Ctx<'a, '_>, unit: &gimli::Unit<Slice<'a>>, index: u64) -> Option<String> {
    let program = unit.line_program.as_ref()?;
    header_file_path(ctx, unit, program.header(), index)
}

/// `comp_dir/dir/file` of entry `index` of a line program's file table.
fn header_file_path<'a>(
    ctx: &Ctx<'a, '_>,
    unit: &gimli::Unit<Slice<'a>>,
    header: &gimli::LineProgramHeader<Slice<'a>>,
    index: u64,
) -> Option<String> {
    let file = header.file(index)?;
    let mut path = String::new();
    let mut push = |part: &str| {
        if part.starts_with('/') || path.is_empty() {
            path = part.to_string();
        } else if !part.is_empty() {
            if !path.ends_with('/') {
                path.push('/');
            }
            path.push_str(part);
        }
    };
    if let Some(dir) = &unit.comp_dir {
        push(&dir.to_string_lossy());
    }
    if let Some(dir) = file.directory(header) {
        if let Some(d) = ctx.strings.get(ctx.dwarf, unit, dir) {
            push(&d);
        }
    }
    push(&ctx.strings.get(ctx.dwarf, unit, file.path_name())?);
    Some(path)
}
