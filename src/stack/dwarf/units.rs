//! Which compilation unit holds each address: from `.debug_aranges` when present (one small
//! contiguous section), else from every unit's root DIE ranges.

use gimli::DebugInfoOffset;

use super::Slice;

/// For each of `targets` (sorted, unique), the `.debug_info` offset of its unit, if known;
/// and the sorted start offsets of all units seen.
#[allow(clippy::type_complexity)]
pub(crate) fn unit_of_each(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    targets: &[u64],
) -> gimli::Result<(Vec<Option<DebugInfoOffset>>, Vec<DebugInfoOffset>)> {
    let mut out = vec![None; targets.len()];
    let mut starts = Vec::new();
    let mut headers = dwarf.debug_aranges.headers();
    while let Some(header) = headers.next()? {
        let cu = header.debug_info_offset();
        starts.push(cu);
        let mut entries = header.entries();
        while let Some(e) = entries.next()? {
            let r = e.range();
            mark(targets, &mut out, r.begin, r.end, cu);
        }
    }
    if !starts.is_empty() {
        starts.sort_unstable_by_key(|o| o.0);
        starts.dedup();
        return Ok((out, starts));
    }
    // No aranges: read each unit's root DIE (parses its abbreviations and line header).
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        let Some(cu) = header.offset().to_debug_info_offset(&header) else {
            continue;
        };
        starts.push(cu);
        let unit = dwarf.unit(header)?;
        let mut ranges = dwarf.unit_ranges(&unit)?;
        while let Some(r) = ranges.next()? {
            mark(targets, &mut out, r.begin, r.end, cu);
        }
    }
    Ok((out, starts))
}

fn mark(
    targets: &[u64],
    out: &mut [Option<DebugInfoOffset>],
    begin: u64,
    end: u64,
    cu: DebugInfoOffset,
) {
    let first = targets.partition_point(|&t| t < begin);
    for (t, slot) in targets[first..].iter().zip(&mut out[first..]) {
        if *t >= end {
            break;
        }
        slot.get_or_insert(cu);
    }
}

/// Size in bytes of the unit at `offset` in `.debug_info` (header included).
pub(crate) fn unit_size(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    offset: DebugInfoOffset,
) -> gimli::Result<u64> {
    let header = dwarf.unit_header(offset)?;
    Ok(header.length_including_self() as u64)
}
