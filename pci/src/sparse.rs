//! The mmappable ("sparse") areas of a BAR: everything except the pages that must trap
//! (the MSI-X table and PBA), so those pages exit to the VMM and the rest goes straight to the
//! device through a memslot.

use std::ops::Range;

use crate::error::Error;

/// The page-aligned areas of a BAR of `bar_size` bytes that do not touch any range in `traps`
/// (offsets within the BAR), in ascending order. Trapped ranges are widened to whole pages;
/// a partial page at the end of a BAR smaller than or not a multiple of `page_size` is never
/// mmappable.
pub fn sparse_areas(
    bar_size: u64,
    traps: &[Range<u64>],
    page_size: u64,
) -> Result<Vec<Range<u64>>, Error> {
    if !page_size.is_power_of_two() {
        return Err(Error::PageSize(page_size));
    }
    let mut pages: Vec<Range<u64>> = Vec::with_capacity(traps.len());
    for t in traps {
        if t.start >= t.end || t.end > bar_size {
            return Err(Error::TrapRange {
                start: t.start,
                end: t.end,
                bar_size,
            });
        }
        let start = t.start & !(page_size - 1);
        // t.end <= bar_size, so the rounding can only overflow for BARs near 2^64.
        let end = t
            .end
            .checked_next_multiple_of(page_size)
            .unwrap_or(u64::MAX);
        pages.push(start..end);
    }
    pages.sort_by_key(|r| r.start);

    let limit = bar_size & !(page_size - 1);
    let mut areas = Vec::new();
    let mut cursor = 0;
    for p in pages {
        if p.start > cursor {
            areas.push(cursor..p.start.min(limit));
        }
        cursor = cursor.max(p.end);
    }
    if cursor < limit {
        areas.push(cursor..limit);
    }
    areas.retain(|r| r.start < r.end);
    Ok(areas)
}

#[cfg(test)]
// One-range trap lists are what the tests mean.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    const PAGE: u64 = 0x1000;

    #[test]
    fn no_traps_maps_everything() {
        assert_eq!(sparse_areas(1 << 20, &[], PAGE).unwrap(), vec![0..1 << 20]);
    }

    #[test]
    fn table_and_pba_on_one_page_leave_one_hole() {
        // Table of 4 vectors at 0x2000, PBA right after it on the same page.
        let areas = sparse_areas(0x10000, &[0x2000..0x2040, 0x2800..0x2808], PAGE).unwrap();
        assert_eq!(areas, vec![0..0x2000, 0x3000..0x10000]);
    }

    #[test]
    fn traps_at_the_edges_and_unaligned() {
        let areas = sparse_areas(0x8000, &[0x7ff0..0x8000, 0x10..0x20], PAGE).unwrap();
        assert_eq!(areas, vec![0x1000..0x7000]);
        // A table spanning a page boundary traps both pages.
        let areas = sparse_areas(0x8000, &[0x1ff0..0x2010], PAGE).unwrap();
        assert_eq!(areas, vec![0..0x1000, 0x3000..0x8000]);
    }

    #[test]
    fn overlapping_traps_merge() {
        let areas = sparse_areas(0x8000, &[0x3000..0x5000, 0x1000..0x4000], PAGE).unwrap();
        assert_eq!(areas, vec![0..0x1000, 0x5000..0x8000]);
    }

    #[test]
    fn small_bar_is_not_mappable() {
        assert_eq!(sparse_areas(0x100, &[], PAGE).unwrap(), vec![]);
        assert_eq!(sparse_areas(0x1800, &[], PAGE).unwrap(), vec![0..0x1000]);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert_eq!(sparse_areas(0x1000, &[], 3000), Err(Error::PageSize(3000)));
        assert!(matches!(
            sparse_areas(0x1000, &[0x800..0x2000], PAGE),
            Err(Error::TrapRange { .. })
        ));
        assert!(matches!(
            sparse_areas(0x1000, &[0x800..0x800], PAGE),
            Err(Error::TrapRange { .. })
        ));
    }
}
