//! MSI-X emulation: the capability's control word, the vector table and the PBA.
//!
//! Used by emulated devices and (in the devices crate) by passthrough devices, which trap the
//! table and PBA pages of their BAR and virtualize the control word. Only the control word is
//! virtualized in config space: [`MsixConfig::read_config`] overlays it on whatever the caller
//! read (from a [`crate::ConfigSpace`] or the host device), and
//! [`MsixConfig::write_config`] takes the bytes of a config write that hit it.
//!
//! Route changes go to a [`MsiRoutes`] in the order the [`crate::interrupt`] module states.

use std::ops::Range;

use log::warn;

use crate::capabilities::{u32_at, CAP_ID_MSIX};
use crate::config_space::ConfigSpace;
use crate::error::Error;
use crate::interrupt::{
    checked_message, owner_or, MsiMessage, MsiRoutes, RouteError, VectorTracker,
};

/// Bytes per table entry.
pub const MSIX_ENTRY_SIZE: u64 = 16;
/// Largest table (11-bit table size field + 1).
pub const MSIX_MAX_VECTORS: u16 = 2048;
/// Length of the MSI-X capability, header included.
pub const MSIX_CAP_LEN: u16 = 12;
/// Message control: MSI-X enable.
pub const MSIX_CONTROL_ENABLE: u16 = 1 << 15;
/// Message control: function mask.
pub const MSIX_CONTROL_FUNCTION_MASK: u16 = 1 << 14;
/// Vector control: mask bit.
pub const MSIX_VECTOR_MASKED: u32 = 1;

const CONTROL_OFFSET: u16 = 2;
const TABLE_SIZE_MASK: u16 = 0x7ff;
const BIR_MASK: u32 = 0x7;

/// Where the table and the PBA live and how many vectors there are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixLayout {
    /// Number of vectors (table entries), 1..=2048.
    pub table_size: u16,
    /// BAR holding the table.
    pub table_bir: u8,
    /// Offset of the table in that BAR (8-byte aligned).
    pub table_offset: u32,
    /// BAR holding the PBA.
    pub pba_bir: u8,
    /// Offset of the PBA in that BAR (8-byte aligned).
    pub pba_offset: u32,
}

impl MsixLayout {
    /// Decodes the MSI-X capability at `cap_offset` of a raw config space.
    pub fn from_capability(config: &[u8], cap_offset: u8) -> Result<Self, Error> {
        let o = usize::from(cap_offset);
        let out_of_range = || Error::CapabilityOffset {
            offset: cap_offset.into(),
            len: config.len(),
        };
        let header = u32_at(config, o).ok_or_else(out_of_range)?;
        let table = u32_at(config, o + 4).ok_or_else(out_of_range)?;
        let pba = u32_at(config, o + 8).ok_or_else(out_of_range)?;
        let control = (header >> 16) as u16;
        let layout = MsixLayout {
            table_size: (control & TABLE_SIZE_MASK) + 1,
            table_bir: (table & BIR_MASK) as u8,
            table_offset: table & !BIR_MASK,
            pba_bir: (pba & BIR_MASK) as u8,
            pba_offset: pba & !BIR_MASK,
        };
        layout.validate()?;
        Ok(layout)
    }

    /// Checks the size, BIRs and alignments.
    pub fn validate(&self) -> Result<(), Error> {
        if self.table_size == 0 || self.table_size > MSIX_MAX_VECTORS {
            return Err(Error::MsixTableSize(self.table_size));
        }
        for (what, bir, offset) in [
            ("table", self.table_bir, self.table_offset),
            ("PBA", self.pba_bir, self.pba_offset),
        ] {
            if bir > 5 || offset % 8 != 0 {
                return Err(Error::MsixLocation { what, bir, offset });
            }
        }
        Ok(())
    }

    /// The capability body after the id/next bytes: control (table size), table and PBA
    /// offset/BIR registers.
    pub fn capability_body(&self) -> [u8; 10] {
        let mut body = [0u8; 10];
        body[0..2].copy_from_slice(&((self.table_size - 1) & TABLE_SIZE_MASK).to_le_bytes());
        body[2..6].copy_from_slice(&(self.table_offset | u32::from(self.table_bir)).to_le_bytes());
        body[6..10].copy_from_slice(&(self.pba_offset | u32::from(self.pba_bir)).to_le_bytes());
        body
    }

    /// Byte range of the table within BAR `table_bir`.
    pub fn table_range(&self) -> Range<u64> {
        let start = u64::from(self.table_offset);
        start..start + u64::from(self.table_size) * MSIX_ENTRY_SIZE
    }

    /// Byte range of the PBA within BAR `pba_bir` (one bit per vector, in qwords).
    pub fn pba_range(&self) -> Range<u64> {
        let start = u64::from(self.pba_offset);
        start..start + u64::from(self.table_size).div_ceil(64) * 8
    }
}

/// One table entry as the guest programmed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixEntry {
    /// Message address, low dword.
    pub address_lo: u32,
    /// Message address, high dword.
    pub address_hi: u32,
    /// Message data.
    pub data: u32,
    /// Vector control (bit 0 = masked).
    pub control: u32,
}

impl Default for MsixEntry {
    /// Entries start masked (PCI spec).
    fn default() -> Self {
        MsixEntry {
            address_lo: 0,
            address_hi: 0,
            data: 0,
            control: MSIX_VECTOR_MASKED,
        }
    }
}

impl MsixEntry {
    /// The message this entry sends.
    pub fn message(&self) -> MsiMessage {
        MsiMessage {
            address: u64::from(self.address_hi) << 32 | u64::from(self.address_lo),
            data: self.data,
        }
    }

    /// The vector mask bit.
    pub fn masked(&self) -> bool {
        self.control & MSIX_VECTOR_MASKED != 0
    }
}

/// The MSI-X state of one function.
#[derive(Clone, Debug)]
pub struct MsixConfig {
    cap_offset: u16,
    layout: MsixLayout,
    enabled: bool,
    function_masked: bool,
    table: Vec<MsixEntry>,
    pba: Vec<u64>,
    tracker: VectorTracker,
}

impl MsixConfig {
    /// MSI-X with `layout` whose capability sits at `cap_offset` in config space. Starts
    /// disabled with every vector masked and nothing pending.
    pub fn new(cap_offset: u16, layout: MsixLayout) -> Result<Self, Error> {
        layout.validate()?;
        let n = usize::from(layout.table_size);
        Ok(MsixConfig {
            cap_offset,
            layout,
            enabled: false,
            function_masked: false,
            table: vec![MsixEntry::default(); n],
            pba: vec![0; n.div_ceil(64)],
            tracker: VectorTracker::new(layout.table_size),
        })
    }

    /// Adds the MSI-X capability to an emulated config space and returns its state.
    pub fn add_to(config: &mut ConfigSpace, layout: MsixLayout) -> Result<Self, Error> {
        layout.validate()?;
        let offset = config.add_capability(CAP_ID_MSIX, &layout.capability_body())?;
        Self::new(offset.into(), layout)
    }

    /// Offset of the capability in config space.
    pub fn cap_offset(&self) -> u16 {
        self.cap_offset
    }

    /// Table and PBA placement.
    pub fn layout(&self) -> &MsixLayout {
        &self.layout
    }

    /// MSI-X enable bit.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Function mask bit.
    pub fn function_masked(&self) -> bool {
        self.function_masked
    }

    /// The message control word as the guest reads it.
    pub fn control(&self) -> u16 {
        let mut c = (self.layout.table_size - 1) & TABLE_SIZE_MASK;
        if self.enabled {
            c |= MSIX_CONTROL_ENABLE;
        }
        if self.function_masked {
            c |= MSIX_CONTROL_FUNCTION_MASK;
        }
        c
    }

    /// Overlays the control word on a config read of `data` at `offset`; other bytes are
    /// left as the caller read them.
    pub fn read_config(&self, offset: u16, data: &mut [u8]) {
        let reg = self.cap_offset + CONTROL_OFFSET;
        let control = self.control().to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            let o = usize::from(offset) + i;
            if let Some(k) = o.checked_sub(usize::from(reg)).filter(|k| *k < 2) {
                *b = control[k];
            }
        }
    }

    /// Applies the bytes of a config write that hit the control word (enable and function
    /// mask; the table size is read-only). Other bytes are ignored.
    pub fn write_config(
        &mut self,
        offset: u16,
        data: &[u8],
        routes: &mut dyn MsiRoutes,
    ) -> Result<(), RouteError> {
        let reg = usize::from(self.cap_offset + CONTROL_OFFSET);
        let mut control = self.control().to_le_bytes();
        let mut hit = false;
        for (i, b) in data.iter().enumerate() {
            let o = usize::from(offset) + i;
            if let Some(k) = o.checked_sub(reg).filter(|k| *k < 2) {
                control[k] = *b;
                hit = true;
            }
        }
        if !hit {
            return Ok(());
        }
        self.set_control(u16::from_le_bytes(control), routes)
    }

    /// Sets the enable and function-mask bits from a control word value.
    pub fn set_control(
        &mut self,
        control: u16,
        routes: &mut dyn MsiRoutes,
    ) -> Result<(), RouteError> {
        let enabled = control & MSIX_CONTROL_ENABLE != 0;
        let masked = control & MSIX_CONTROL_FUNCTION_MASK != 0;
        if enabled == self.enabled && masked == self.function_masked {
            return Ok(());
        }
        self.enabled = enabled;
        self.function_masked = masked;
        self.sync(0..self.layout.table_size, routes)
    }

    /// A guest read of the table at `offset` from the table start (4 or 8 bytes, aligned).
    /// Anything else reads all-ones and is logged.
    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        let Some((index, field)) = self.table_access(offset, data.len()) else {
            data.fill(0xff);
            return;
        };
        let e = &self.table[index];
        let dwords = [e.address_lo, e.address_hi, e.data, e.control];
        for (k, chunk) in data.chunks_mut(4).enumerate() {
            chunk.copy_from_slice(&dwords[field + k].to_le_bytes());
        }
    }

    /// A guest write to the table at `offset` from the table start (4 or 8 bytes, aligned).
    /// Anything else is ignored and logged. Routes follow the entry's new state.
    pub fn write_table(
        &mut self,
        offset: u64,
        data: &[u8],
        routes: &mut dyn MsiRoutes,
    ) -> Result<(), RouteError> {
        let Some((index, field)) = self.table_access(offset, data.len()) else {
            return Ok(());
        };
        let e = &mut self.table[index];
        for (k, chunk) in data.chunks(4).enumerate() {
            let mut b = [0u8; 4];
            b.copy_from_slice(chunk);
            let v = u32::from_le_bytes(b);
            match field + k {
                0 => e.address_lo = v,
                1 => e.address_hi = v,
                2 => e.data = v,
                // Vector control bits 31:1 are reserved.
                _ => e.control = v & MSIX_VECTOR_MASKED,
            }
        }
        let v = index as u16; // index < 2048
        self.sync(v..v + 1, routes)
    }

    /// Entry index and first dword of a valid table access.
    fn table_access(&self, offset: u64, len: usize) -> Option<(usize, usize)> {
        let len64 = len as u64;
        let index = offset / MSIX_ENTRY_SIZE;
        if !(len == 4 || len == 8) || offset % len64 != 0 || index >= self.table.len() as u64 {
            warn!(
                "MSI-X table access of {len} bytes at {offset:#x} ignored (table of {} entries)",
                self.table.len()
            );
            return None;
        }
        // index < 2048, the dword index < 4.
        Some((index as usize, ((offset % MSIX_ENTRY_SIZE) / 4) as usize))
    }

    /// A guest read of the PBA at `offset` from the PBA start (4 or 8 bytes, aligned).
    /// Anything else reads all-ones. Writes to the PBA are to be ignored (read-only).
    pub fn read_pba(&self, offset: u64, data: &mut [u8]) {
        let len = data.len();
        let qword = usize::try_from(offset / 8).unwrap_or(usize::MAX);
        if !(len == 4 || len == 8) || offset % len as u64 != 0 || qword >= self.pba.len() {
            warn!("MSI-X PBA read of {len} bytes at {offset:#x} ignored");
            data.fill(0xff);
            return;
        }
        let bytes = self.pba[qword].to_le_bytes();
        let start = (offset % 8) as usize; // 0 or 4
        data.copy_from_slice(&bytes[start..start + len]);
    }

    /// Entry `vector`, if it exists.
    pub fn entry(&self, vector: u16) -> Option<MsixEntry> {
        self.table.get(usize::from(vector)).copied()
    }

    /// The vector cannot fire now: MSI-X disabled, function masked or vector masked.
    pub fn is_masked(&self, vector: u16) -> bool {
        !self.enabled || self.function_masked || self.entry(vector).is_none_or(|e| e.masked())
    }

    /// The vmm has the vector's route and irqfd installed.
    pub fn is_armed(&self, vector: u16) -> bool {
        self.tracker.is_armed(vector)
    }

    /// The vector's pending bit.
    pub fn pending(&self, vector: u16) -> bool {
        let v = usize::from(vector);
        self.pba
            .get(v / 64)
            .is_some_and(|q| q & (1 << (v % 64)) != 0)
    }

    /// An interrupt for `vector` arrived. Returns true if the caller should deliver it (the
    /// vector is armed); otherwise its pending bit is set (the vector fires through
    /// [`MsiRoutes::trigger`] once armed) and false is returned.
    pub fn request_interrupt(&mut self, vector: u16) -> bool {
        let v = usize::from(vector);
        if v >= self.table.len() {
            warn!("MSI-X interrupt for vector {vector} beyond the table ignored");
            return false;
        }
        if self.tracker.is_armed(vector) {
            return true;
        }
        self.pba[v / 64] |= 1 << (v % 64);
        false
    }

    fn sync(&mut self, vectors: Range<u16>, routes: &mut dyn MsiRoutes) -> Result<(), RouteError> {
        let live = self.enabled && !self.function_masked;
        let table = &self.table;
        let who = owner_or(routes, "MSI-X");
        let newly_armed = self.tracker.sync(
            vectors,
            |v| {
                let e = table[usize::from(v)];
                if !live || e.masked() {
                    return None;
                }
                checked_message(&who, v, e.message())
            },
            routes,
        )?;
        for v in newly_armed {
            if self.pending(v) {
                let v_usize = usize::from(v);
                self.pba[v_usize / 64] &= !(1 << (v_usize % 64));
                routes.trigger(v)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::{find_capability, CAP_ID_MSIX};
    use crate::config_space::PciHeader;
    use crate::interrupt::testing::{RecordingRoutes, RouteCall};
    use crate::interrupt::VectorRoute;

    const ADDR: u32 = 0xfee0_0000;

    fn layout(n: u16) -> MsixLayout {
        MsixLayout {
            table_size: n,
            table_bir: 0,
            table_offset: 0x2000,
            pba_bir: 0,
            pba_offset: 0x3000,
        }
    }

    fn msix(n: u16) -> MsixConfig {
        MsixConfig::new(0xb0, layout(n)).unwrap()
    }

    fn w32(m: &mut MsixConfig, r: &mut RecordingRoutes, off: u64, v: u32) {
        m.write_table(off, &v.to_le_bytes(), r).unwrap();
    }

    fn r32(m: &MsixConfig, off: u64) -> u32 {
        let mut b = [0u8; 4];
        m.read_table(off, &mut b);
        u32::from_le_bytes(b)
    }

    /// Programs entry `v` (still masked): address, data = 0x40 + v.
    fn program(m: &mut MsixConfig, r: &mut RecordingRoutes, v: u64) {
        let e = v * 16;
        w32(m, r, e, ADDR | (v as u32) << 12);
        w32(m, r, e + 4, 0);
        w32(m, r, e + 8, 0x40 + v as u32);
    }

    fn route(v: u16) -> VectorRoute {
        VectorRoute {
            vector: v,
            message: MsiMessage {
                address: u64::from(ADDR | u32::from(v) << 12),
                data: 0x40 + u32::from(v),
            },
        }
    }

    fn set_control(m: &mut MsixConfig, r: &mut RecordingRoutes, c: u16) {
        // The guest writes the control word as a word at cap + 2.
        m.write_config(m.cap_offset() + 2, &c.to_le_bytes(), r)
            .unwrap();
    }

    #[test]
    fn table_starts_masked_and_reads_back() {
        let mut r = RecordingRoutes::default();
        let mut m = msix(4);
        for v in 0..4 {
            assert_eq!(r32(&m, v * 16 + 12), MSIX_VECTOR_MASKED);
            assert!(m.is_masked(v as u16));
        }
        w32(&mut m, &mut r, 0x10, 0xfee0_1000);
        w32(&mut m, &mut r, 0x14, 0);
        w32(&mut m, &mut r, 0x18, 0x4041);
        assert_eq!(r32(&m, 0x10), 0xfee0_1000);
        assert_eq!(r32(&m, 0x18), 0x4041);
        // 8-byte accesses: address pair, data + control.
        m.write_table(0x20, &0x0000_0001_fee0_2000u64.to_le_bytes(), &mut r)
            .unwrap();
        let mut q = [0u8; 8];
        m.read_table(0x20, &mut q);
        assert_eq!(u64::from_le_bytes(q), 0x0000_0001_fee0_2000);
        m.read_table(0x28, &mut q);
        assert_eq!(u64::from_le_bytes(q), 0x0000_0001_0000_0000);
        // Reserved vector-control bits are dropped.
        w32(&mut m, &mut r, 0x1c, 0xffff_fffe);
        assert_eq!(r32(&m, 0x1c), 0);
        let e = m.entry(1).unwrap();
        assert_eq!(e.message().address, 0xfee0_1000);
        // MSI-X is disabled: nothing was ever armed.
        assert!(r.calls.is_empty());
    }

    #[test]
    fn bad_table_accesses_are_ignored() {
        let mut r = RecordingRoutes::default();
        let mut m = msix(2);
        let before = m.entry(0);
        // Odd sizes, misaligned, out of range: no panic, no change.
        m.write_table(0, &[1, 2], &mut r).unwrap();
        m.write_table(0, &[1, 2, 3], &mut r).unwrap();
        m.write_table(2, &[1, 2, 3, 4], &mut r).unwrap();
        m.write_table(4, &[0; 8], &mut r).unwrap();
        m.write_table(0x20, &[0; 4], &mut r).unwrap();
        m.write_table(u64::MAX - 3, &[0; 4], &mut r).unwrap();
        assert_eq!(m.entry(0), before);
        let mut b = [0u8; 2];
        m.read_table(0, &mut b);
        assert_eq!(b, [0xff; 2]);
        let mut d = [0u8; 4];
        m.read_table(0x20, &mut d);
        assert_eq!(d, [0xff; 4]);
        let mut big = [0u8; 16];
        m.read_table(0, &mut big);
        assert_eq!(big, [0xff; 16]);
        m.read_pba(3, &mut d);
        assert_eq!(d, [0xff; 4]);
        m.read_pba(8, &mut d);
        assert_eq!(d, [0xff; 4]);
        assert!(!m.request_interrupt(7));
        assert!(r.calls.is_empty());
    }

    #[test]
    fn routes_follow_masks_in_order_and_only_enabled_vectors_are_armed() {
        let mut r = RecordingRoutes::default();
        let mut m = msix(8);
        program(&mut m, &mut r, 0);
        program(&mut m, &mut r, 2);
        set_control(&mut m, &mut r, MSIX_CONTROL_ENABLE);
        assert!(m.enabled());
        assert!(r.calls.is_empty(), "all vectors masked: nothing armed");

        w32(&mut m, &mut r, 12, 0); // unmask 0
        assert_eq!(
            r.take(),
            vec![
                RouteCall::SetRoutes(vec![route(0)]),
                RouteCall::Enable(vec![0])
            ]
        );
        w32(&mut m, &mut r, 0x2c, 0); // unmask 2
        assert_eq!(
            r.take(),
            vec![
                RouteCall::SetRoutes(vec![route(0), route(2)]),
                RouteCall::Enable(vec![2])
            ]
        );
        assert!(m.is_armed(0) && m.is_armed(2) && !m.is_armed(1));

        // Function mask: everything off; unmask: everything back.
        set_control(
            &mut m,
            &mut r,
            MSIX_CONTROL_ENABLE | MSIX_CONTROL_FUNCTION_MASK,
        );
        assert_eq!(
            r.take(),
            vec![RouteCall::Disable(vec![0, 2]), RouteCall::SetRoutes(vec![])]
        );
        assert!(m.is_masked(2));
        set_control(&mut m, &mut r, MSIX_CONTROL_ENABLE);
        assert_eq!(
            r.take(),
            vec![
                RouteCall::SetRoutes(vec![route(0), route(2)]),
                RouteCall::Enable(vec![0, 2])
            ]
        );

        // Mask one: disable before the commit that drops its route.
        w32(&mut m, &mut r, 12, 1);
        assert_eq!(
            r.take(),
            vec![
                RouteCall::Disable(vec![0]),
                RouteCall::SetRoutes(vec![route(2)])
            ]
        );
        // Reprogramming an armed vector only re-commits routes.
        w32(&mut m, &mut r, 0x28, 0x99);
        let mut moved = route(2);
        moved.message.data = 0x99;
        assert_eq!(r.take(), vec![RouteCall::SetRoutes(vec![moved])]);
        // Writing the same value again: nothing.
        w32(&mut m, &mut r, 0x28, 0x99);
        assert!(r.calls.is_empty());

        // Disable MSI-X.
        set_control(&mut m, &mut r, 0);
        assert_eq!(
            r.take(),
            vec![RouteCall::Disable(vec![2]), RouteCall::SetRoutes(vec![])]
        );
        // Rewriting the same control word: nothing.
        set_control(&mut m, &mut r, 0);
        assert!(r.calls.is_empty());
    }

    #[test]
    fn linux_style_enable_sequence() {
        // Linux: enable with the function masked, program and unmask entries, then clear the
        // function mask: the routes are committed once and the irqfds added once.
        let mut r = RecordingRoutes::default();
        let mut m = msix(9);
        set_control(
            &mut m,
            &mut r,
            MSIX_CONTROL_ENABLE | MSIX_CONTROL_FUNCTION_MASK,
        );
        for v in [0u64, 1, 5] {
            program(&mut m, &mut r, v);
            w32(&mut m, &mut r, v * 16 + 12, 0);
        }
        assert!(r.calls.is_empty());
        set_control(&mut m, &mut r, MSIX_CONTROL_ENABLE);
        assert_eq!(
            r.take(),
            vec![
                RouteCall::SetRoutes(vec![route(0), route(1), route(5)]),
                RouteCall::Enable(vec![0, 1, 5])
            ]
        );
    }

    #[test]
    fn invalid_message_address_is_not_armed() {
        let mut r = RecordingRoutes::default();
        let mut m = msix(2);
        set_control(&mut m, &mut r, MSIX_CONTROL_ENABLE);
        w32(&mut m, &mut r, 0, 0x1234_0000);
        w32(&mut m, &mut r, 12, 0);
        assert!(r.calls.is_empty());
        assert!(!m.is_armed(0));
        assert!(!m.is_masked(0));
        assert_eq!(
            r32(&m, 0),
            0x1234_0000,
            "the table still holds what was written"
        );
        // Fixing the address arms it.
        w32(&mut m, &mut r, 0, ADDR);
        assert_eq!(r.calls.last(), Some(&RouteCall::Enable(vec![0])));
    }

    #[test]
    fn pending_bits_and_delivery_on_unmask() {
        let mut r = RecordingRoutes::default();
        let mut m = msix(70);
        set_control(&mut m, &mut r, MSIX_CONTROL_ENABLE);
        program(&mut m, &mut r, 65);
        assert!(!m.request_interrupt(65));
        assert!(m.pending(65));
        let mut q = [0u8; 8];
        m.read_pba(8, &mut q);
        assert_eq!(u64::from_le_bytes(q), 1 << 1);
        let mut d = [0u8; 4];
        m.read_pba(8, &mut d);
        assert_eq!(u32::from_le_bytes(d), 2);
        m.read_pba(0, &mut q);
        assert_eq!(u64::from_le_bytes(q), 0);
        assert_eq!(m.layout().pba_range(), 0x3000..0x3010);

        w32(&mut m, &mut r, 65 * 16 + 12, 0);
        assert_eq!(
            r.take(),
            vec![
                RouteCall::SetRoutes(vec![route(65)]),
                RouteCall::Enable(vec![65]),
                RouteCall::Trigger(65)
            ]
        );
        assert!(!m.pending(65));
        assert!(m.request_interrupt(65), "armed: deliver now");
        assert!(!m.pending(65));
    }

    #[test]
    fn route_failure_is_reported_and_retried() {
        let mut r = RecordingRoutes {
            fail: Some("set_routes"),
            ..Default::default()
        };
        let mut m = msix(1);
        set_control(&mut m, &mut r, MSIX_CONTROL_ENABLE);
        program(&mut m, &mut r, 0);
        assert!(m.write_table(12, &0u32.to_le_bytes(), &mut r).is_err());
        assert!(!m.is_armed(0));
        // The next change to the vector retries the commit and the enable.
        w32(&mut m, &mut r, 12, 0);
        assert_eq!(
            r.take(),
            vec![
                RouteCall::SetRoutes(vec![route(0)]),
                RouteCall::Enable(vec![0])
            ]
        );
    }

    #[test]
    fn capability_in_emulated_config_space() {
        let mut cs = ConfigSpace::new(&PciHeader::default());
        let mut r = RecordingRoutes::default();
        let mut m = MsixConfig::add_to(&mut cs, layout(9)).unwrap();
        let off = find_capability(cs.as_bytes(), CAP_ID_MSIX).unwrap();
        assert_eq!(u16::from(off), m.cap_offset());
        assert_eq!(
            MsixLayout::from_capability(cs.as_bytes(), off).unwrap(),
            layout(9)
        );
        // A device reads config space, then lets MSI-X overlay the control word.
        let read = |cs: &ConfigSpace, m: &MsixConfig, at: u16| {
            let mut b = [0u8; 4];
            cs.read(at, &mut b);
            m.read_config(at, &mut b);
            u32::from_le_bytes(b)
        };
        let header = read(&cs, &m, off.into());
        assert_eq!(header & 0xff, u32::from(CAP_ID_MSIX));
        assert_eq!(header >> 16, 8);
        // A byte write to cap + 3 (Linux writes the whole word; either works).
        m.write_config(u16::from(off) + 3, &[0xc0], &mut r).unwrap();
        assert_eq!(read(&cs, &m, off.into()) >> 16, 0xc008);
        assert!(m.enabled() && m.function_masked());
        // The table size is read-only; writes elsewhere are not MSI-X's.
        m.write_config(u16::from(off) + 2, &[0xff], &mut r).unwrap();
        assert_eq!(m.control() & 0x7ff, 8);
        m.write_config(u16::from(off) + 4, &[0; 4], &mut r).unwrap();
        assert_eq!(read(&cs, &m, u16::from(off) + 4), 0x2000);
    }

    #[test]
    fn layout_validation() {
        assert_eq!(
            MsixConfig::new(0x40, layout(0)).unwrap_err(),
            Error::MsixTableSize(0)
        );
        assert_eq!(
            MsixConfig::new(0x40, layout(2049)).unwrap_err(),
            Error::MsixTableSize(2049)
        );
        let mut bad = layout(4);
        bad.table_bir = 6;
        assert!(matches!(
            bad.validate(),
            Err(Error::MsixLocation { what: "table", .. })
        ));
        let mut bad = layout(4);
        bad.pba_offset = 0x3004;
        assert!(matches!(
            bad.validate(),
            Err(Error::MsixLocation { what: "PBA", .. })
        ));
        assert_eq!(layout(2048).table_range(), 0x2000..0xa000);
        assert!(matches!(
            MsixLayout::from_capability(&[0u8; 0x100], 0xfc),
            Err(Error::CapabilityOffset { .. })
        ));
    }
}
