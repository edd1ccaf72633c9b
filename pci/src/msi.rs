//! MSI emulation: the MSI capability registers (32/64-bit address, optional per-vector
//! masking, multiple-message enable) virtualized in config space.
//!
//! [`MsiConfig::read_config`] overlays the capability's registers (everything after the
//! id/next bytes) on what the caller read; [`MsiConfig::write_config`] takes the bytes of a
//! config write that hit them. Route changes go to a [`MsiRoutes`] in the order the
//! [`crate::interrupt`] module states.

use log::warn;

use crate::capabilities::{u32_at, CAP_ID_MSI};
use crate::config_space::ConfigSpace;
use crate::error::Error;
use crate::interrupt::{
    checked_message, owner_or, MsiMessage, MsiRoutes, RouteError, VectorTracker,
};

/// Message control: MSI enable.
pub const MSI_CONTROL_ENABLE: u16 = 1 << 0;
/// Message control: 64-bit address capable.
pub const MSI_CONTROL_64BIT: u16 = 1 << 7;
/// Message control: per-vector masking capable.
pub const MSI_CONTROL_PER_VECTOR_MASK: u16 = 1 << 8;

const MMC_SHIFT: u16 = 1;
const MME_SHIFT: u16 = 4;
const MAX_CAP_LEN: usize = 0x18;

/// What the MSI capability offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiLayout {
    /// Vectors the function can use: 1, 2, 4, 8, 16 or 32.
    pub vectors: u8,
    /// 64-bit message address.
    pub is_64bit: bool,
    /// Per-vector mask and pending registers.
    pub per_vector_mask: bool,
}

impl MsiLayout {
    /// Decodes the MSI capability at `cap_offset` of a raw config space (extended message
    /// data is not carried over).
    pub fn from_capability(config: &[u8], cap_offset: u8) -> Result<Self, Error> {
        let header = u32_at(config, usize::from(cap_offset)).ok_or(Error::CapabilityOffset {
            offset: cap_offset.into(),
            len: config.len(),
        })?;
        let control = (header >> 16) as u16;
        let mmc = (control >> MMC_SHIFT) & 0x7;
        let layout = MsiLayout {
            vectors: if mmc > 5 { 0 } else { 1 << mmc },
            is_64bit: control & MSI_CONTROL_64BIT != 0,
            per_vector_mask: control & MSI_CONTROL_PER_VECTOR_MASK != 0,
        };
        layout.validate()?;
        Ok(layout)
    }

    /// Checks the vector count.
    pub fn validate(&self) -> Result<(), Error> {
        if self.vectors.is_power_of_two() && self.vectors <= 32 {
            Ok(())
        } else {
            Err(Error::MsiVectors(self.vectors))
        }
    }

    /// Length of the capability, header included.
    pub fn cap_len(&self) -> u16 {
        match (self.is_64bit, self.per_vector_mask) {
            (false, false) => 0x0a,
            (true, false) => 0x0e,
            (false, true) => 0x14,
            (true, true) => 0x18,
        }
    }

    fn data_offset(&self) -> usize {
        if self.is_64bit {
            0x0c
        } else {
            0x08
        }
    }

    fn mask_offset(&self) -> Option<usize> {
        self.per_vector_mask.then(|| self.data_offset() + 4)
    }

    fn pending_offset(&self) -> Option<usize> {
        self.mask_offset().map(|m| m + 4)
    }

    fn control(&self) -> u16 {
        let mut c = (self.vectors.trailing_zeros() as u16) << MMC_SHIFT;
        if self.is_64bit {
            c |= MSI_CONTROL_64BIT;
        }
        if self.per_vector_mask {
            c |= MSI_CONTROL_PER_VECTOR_MASK;
        }
        c
    }

    /// The capability body after the id/next bytes, registers at reset.
    pub fn capability_body(&self) -> Vec<u8> {
        let mut body = vec![0u8; usize::from(self.cap_len()) - 2];
        body[0..2].copy_from_slice(&self.control().to_le_bytes());
        body
    }

    /// Guest-writable bits of the register image (cap-relative bytes).
    fn writable(&self) -> [u8; MAX_CAP_LEN] {
        let mut w = [0u8; MAX_CAP_LEN];
        // Enable and multiple message enable.
        w[2] = (MSI_CONTROL_ENABLE | 0x7 << MME_SHIFT) as u8;
        // Address bits 1:0 are reserved.
        w[4..8].copy_from_slice(&0xffff_fffcu32.to_le_bytes());
        if self.is_64bit {
            w[8..12].fill(0xff);
        }
        let d = self.data_offset();
        w[d..d + 2].fill(0xff);
        if let Some(m) = self.mask_offset() {
            let mask = if self.vectors == 32 {
                u32::MAX
            } else {
                (1u32 << self.vectors) - 1
            };
            w[m..m + 4].copy_from_slice(&mask.to_le_bytes());
        }
        w
    }
}

/// The MSI state of one function.
#[derive(Clone, Debug)]
pub struct MsiConfig {
    cap_offset: u16,
    layout: MsiLayout,
    /// Register image, indexed by offset from the capability start (bytes 0..2 unused).
    regs: [u8; MAX_CAP_LEN],
    writable: [u8; MAX_CAP_LEN],
    tracker: VectorTracker,
}

impl MsiConfig {
    /// MSI with `layout` whose capability sits at `cap_offset`. Starts disabled, unmasked.
    pub fn new(cap_offset: u16, layout: MsiLayout) -> Result<Self, Error> {
        layout.validate()?;
        let mut regs = [0u8; MAX_CAP_LEN];
        regs[2..4].copy_from_slice(&layout.control().to_le_bytes());
        Ok(MsiConfig {
            cap_offset,
            layout,
            regs,
            writable: layout.writable(),
            tracker: VectorTracker::new(layout.vectors.into()),
        })
    }

    /// Adds the MSI capability to an emulated config space and returns its state.
    pub fn add_to(config: &mut ConfigSpace, layout: MsiLayout) -> Result<Self, Error> {
        layout.validate()?;
        let offset = config.add_capability(CAP_ID_MSI, &layout.capability_body())?;
        Self::new(offset.into(), layout)
    }

    /// Offset of the capability in config space.
    pub fn cap_offset(&self) -> u16 {
        self.cap_offset
    }

    /// What the capability offers.
    pub fn layout(&self) -> &MsiLayout {
        &self.layout
    }

    fn reg16(&self, o: usize) -> u16 {
        u16::from_le_bytes([self.regs[o], self.regs[o + 1]])
    }

    fn reg32(&self, o: usize) -> u32 {
        u32::from_le_bytes([
            self.regs[o],
            self.regs[o + 1],
            self.regs[o + 2],
            self.regs[o + 3],
        ])
    }

    /// The message control word.
    pub fn control(&self) -> u16 {
        self.reg16(2)
    }

    /// MSI enable bit.
    pub fn enabled(&self) -> bool {
        self.control() & MSI_CONTROL_ENABLE != 0
    }

    /// Vectors the guest enabled (multiple message enable, capped at what is offered);
    /// 0 while MSI is disabled.
    pub fn enabled_vectors(&self) -> u8 {
        if !self.enabled() {
            return 0;
        }
        let mme = (self.control() >> MME_SHIFT) & 0x7;
        let mmc = self.layout.vectors.trailing_zeros() as u16;
        1 << mme.min(mmc)
    }

    /// The message vector `vector` sends: the low bits of the data select the vector.
    pub fn message(&self, vector: u8) -> MsiMessage {
        let mut address = u64::from(self.reg32(4));
        if self.layout.is_64bit {
            address |= u64::from(self.reg32(8)) << 32;
        }
        let n = u32::from(self.enabled_vectors().max(1));
        let data = u32::from(self.reg16(self.layout.data_offset()));
        MsiMessage {
            address,
            data: (data & !(n - 1)) | u32::from(vector) & (n - 1),
        }
    }

    /// The per-vector mask register (0 without per-vector masking).
    pub fn mask_bits(&self) -> u32 {
        self.layout.mask_offset().map_or(0, |m| self.reg32(m))
    }

    /// The per-vector pending register (0 without per-vector masking).
    pub fn pending_bits(&self) -> u32 {
        self.layout.pending_offset().map_or(0, |p| self.reg32(p))
    }

    /// The vmm has the vector's route and irqfd installed.
    pub fn is_armed(&self, vector: u8) -> bool {
        self.tracker.is_armed(vector.into())
    }

    /// Overlays the capability registers (after id/next) on a config read.
    pub fn read_config(&self, offset: u16, data: &mut [u8]) {
        let len = usize::from(self.layout.cap_len());
        for (i, b) in data.iter_mut().enumerate() {
            let o = usize::from(offset) + i;
            if let Some(k) = o
                .checked_sub(usize::from(self.cap_offset))
                .filter(|k| (2..len).contains(k))
            {
                *b = self.regs[k];
            }
        }
    }

    /// Applies the bytes of a config write that hit the capability registers; read-only
    /// bits and bytes outside the capability are ignored.
    pub fn write_config(
        &mut self,
        offset: u16,
        data: &[u8],
        routes: &mut dyn MsiRoutes,
    ) -> Result<(), RouteError> {
        let len = usize::from(self.layout.cap_len());
        let mut hit = false;
        for (i, b) in data.iter().enumerate() {
            let o = usize::from(offset) + i;
            if let Some(k) = o
                .checked_sub(usize::from(self.cap_offset))
                .filter(|k| (2..len).contains(k))
            {
                let w = self.writable[k];
                self.regs[k] = (self.regs[k] & !w) | (b & w);
                hit = true;
            }
        }
        if !hit {
            return Ok(());
        }
        let mme = (self.control() >> MME_SHIFT) & 0x7;
        if self.enabled() && 1u32 << mme > u32::from(self.layout.vectors) {
            warn!(
                "MSI multiple message enable {} above the {} vectors offered; using {}",
                1u32 << mme,
                self.layout.vectors,
                self.layout.vectors
            );
        }
        self.sync(routes)
    }

    /// An interrupt for `vector` arrived. Returns true if the caller should deliver it;
    /// otherwise the pending bit is set when per-vector masking exists (the vector fires
    /// through [`MsiRoutes::trigger`] once armed) and false is returned.
    pub fn request_interrupt(&mut self, vector: u8) -> bool {
        if self.is_armed(vector) {
            return true;
        }
        if let Some(p) = self.layout.pending_offset() {
            if vector < self.layout.vectors {
                let bits = self.reg32(p) | 1 << vector;
                self.regs[p..p + 4].copy_from_slice(&bits.to_le_bytes());
            }
        }
        false
    }

    fn sync(&mut self, routes: &mut dyn MsiRoutes) -> Result<(), RouteError> {
        let n = self.enabled_vectors();
        let mask = self.mask_bits();
        let who = owner_or(routes, "MSI");
        let wanted: Vec<Option<MsiMessage>> = (0..self.layout.vectors)
            .map(|v| {
                if v >= n || mask & (1 << v) != 0 {
                    return None;
                }
                checked_message(&who, v.into(), self.message(v))
            })
            .collect();
        let newly_armed = self.tracker.sync(
            0..self.layout.vectors.into(),
            |v| wanted[usize::from(v)],
            routes,
        )?;
        if let Some(p) = self.layout.pending_offset() {
            for v in newly_armed {
                let bits = self.reg32(p);
                if bits & (1 << v) != 0 {
                    self.regs[p..p + 4].copy_from_slice(&(bits & !(1 << v)).to_le_bytes());
                    routes.trigger(v)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::find_capability;
    use crate::config_space::PciHeader;
    use crate::interrupt::testing::{RecordingRoutes, RouteCall};
    use crate::interrupt::VectorRoute;

    fn layout64() -> MsiLayout {
        MsiLayout {
            vectors: 4,
            is_64bit: true,
            per_vector_mask: true,
        }
    }

    fn write(m: &mut MsiConfig, r: &mut RecordingRoutes, rel: u16, data: &[u8]) {
        m.write_config(m.cap_offset() + rel, data, r).unwrap();
    }

    fn read32(m: &MsiConfig, rel: u16) -> u32 {
        let mut b = [0u8; 4];
        m.read_config(m.cap_offset() + rel, &mut b);
        u32::from_le_bytes(b)
    }

    fn route(v: u16, data: u32) -> VectorRoute {
        VectorRoute {
            vector: v,
            message: MsiMessage {
                address: 0xfee0_1000,
                data,
            },
        }
    }

    #[test]
    fn capability_round_trip() {
        let mut cs = ConfigSpace::new(&PciHeader::default());
        let m = MsiConfig::add_to(&mut cs, layout64()).unwrap();
        let off = find_capability(cs.as_bytes(), CAP_ID_MSI).unwrap();
        assert_eq!(u16::from(off), m.cap_offset());
        assert_eq!(
            MsiLayout::from_capability(cs.as_bytes(), off).unwrap(),
            layout64()
        );
        // MMC = log2(4) = 2, 64-bit, per-vector mask.
        assert_eq!(
            m.control(),
            2 << 1 | MSI_CONTROL_64BIT | MSI_CONTROL_PER_VECTOR_MASK
        );
        assert_eq!(layout64().cap_len(), 0x18);
        let l32 = MsiLayout {
            vectors: 1,
            is_64bit: false,
            per_vector_mask: false,
        };
        assert_eq!(l32.cap_len(), 0x0a);
        assert_eq!(l32.capability_body().len(), 8);
        assert_eq!(
            MsiConfig::new(0x50, MsiLayout { vectors: 3, ..l32 }).unwrap_err(),
            Error::MsiVectors(3)
        );
        assert_eq!(
            MsiConfig::new(0x50, MsiLayout { vectors: 64, ..l32 }).unwrap_err(),
            Error::MsiVectors(64)
        );
    }

    #[test]
    fn multi_message_routes_and_masks() {
        let mut r = RecordingRoutes::default();
        let mut m = MsiConfig::new(0x48, layout64()).unwrap();
        // Address, upper address, data (vector 0x40), all while disabled: no calls.
        write(&mut m, &mut r, 4, &0xfee0_1000u32.to_le_bytes());
        write(&mut m, &mut r, 8, &0u32.to_le_bytes());
        write(&mut m, &mut r, 0xc, &0x0040u16.to_le_bytes());
        assert!(r.calls.is_empty());
        assert_eq!(read32(&m, 4), 0xfee0_1000);
        // Enable with MME = 2 (4 vectors): each vector's data carries its index.
        write(
            &mut m,
            &mut r,
            2,
            &(MSI_CONTROL_ENABLE | 2 << 4).to_le_bytes(),
        );
        assert_eq!(m.enabled_vectors(), 4);
        assert_eq!(
            r.take(),
            vec![
                RouteCall::SetRoutes((0..4).map(|v| route(v, 0x40 + u32::from(v))).collect()),
                RouteCall::Enable(vec![0, 1, 2, 3]),
            ]
        );
        // Mask vectors 1 and 3.
        write(&mut m, &mut r, 0x10, &0b1010u32.to_le_bytes());
        assert_eq!(
            r.take(),
            vec![
                RouteCall::Disable(vec![1, 3]),
                RouteCall::SetRoutes(vec![route(0, 0x40), route(2, 0x42)]),
            ]
        );
        assert!(m.is_armed(0) && !m.is_armed(1));
        // Mask bits beyond the offered vectors are read-only.
        write(&mut m, &mut r, 0x10, &u32::MAX.to_le_bytes());
        assert_eq!(m.mask_bits(), 0xf);
        r.take();
        // Disable MSI.
        write(&mut m, &mut r, 2, &[0]);
        assert_eq!(m.enabled_vectors(), 0);
        assert!(r.calls.is_empty(), "all were masked already: {:?}", r.calls);
    }

    #[test]
    fn read_only_bits_and_clamped_mme() {
        let mut r = RecordingRoutes::default();
        let mut m = MsiConfig::new(0x48, layout64()).unwrap();
        let before = m.control();
        write(&mut m, &mut r, 2, &[0xff, 0xff]);
        // Enable and MME (7) taken; MMC, 64-bit, PVM kept.
        assert_eq!(m.control(), before | MSI_CONTROL_ENABLE | 7 << 4);
        assert_eq!(m.enabled_vectors(), 4, "MME above MMC is capped");
        // The pending register is read-only for the guest.
        write(&mut m, &mut r, 0x14, &u32::MAX.to_le_bytes());
        assert_eq!(m.pending_bits(), 0);
        // Address bits 1:0 are reserved.
        write(&mut m, &mut r, 4, &0xfee0_0003u32.to_le_bytes());
        assert_eq!(read32(&m, 4), 0xfee0_0000);
        // Bytes before the control word (id/next) are not MSI's: left to the caller.
        let mut b = [0xaa; 2];
        m.read_config(0x48, &mut b);
        assert_eq!(b, [0xaa; 2]);
    }

    #[test]
    fn pending_while_masked_fires_on_unmask() {
        let mut r = RecordingRoutes::default();
        let mut m = MsiConfig::new(0x48, layout64()).unwrap();
        write(&mut m, &mut r, 4, &0xfee0_1000u32.to_le_bytes());
        write(&mut m, &mut r, 0xc, &0x0040u16.to_le_bytes());
        write(&mut m, &mut r, 0x10, &1u32.to_le_bytes());
        write(&mut m, &mut r, 2, &MSI_CONTROL_ENABLE.to_le_bytes());
        assert!(r.take().is_empty(), "single vector, masked");
        assert!(!m.request_interrupt(0));
        assert_eq!(read32(&m, 0x14), 1);
        write(&mut m, &mut r, 0x10, &0u32.to_le_bytes());
        assert_eq!(
            r.take(),
            vec![
                RouteCall::SetRoutes(vec![route(0, 0x40)]),
                RouteCall::Enable(vec![0]),
                RouteCall::Trigger(0),
            ]
        );
        assert_eq!(m.pending_bits(), 0);
        assert!(m.request_interrupt(0));
    }

    #[test]
    fn msi_32bit_layout_and_bad_address() {
        let mut r = RecordingRoutes::default();
        let l = MsiLayout {
            vectors: 1,
            is_64bit: false,
            per_vector_mask: false,
        };
        let mut m = MsiConfig::new(0x50, l).unwrap();
        write(&mut m, &mut r, 4, &0x0bad_0000u32.to_le_bytes());
        write(&mut m, &mut r, 8, &0x0031u16.to_le_bytes());
        write(&mut m, &mut r, 2, &[1]);
        assert!(r.calls.is_empty(), "invalid address is not armed");
        assert!(!m.request_interrupt(0));
        write(&mut m, &mut r, 4, &0xfee0_0000u32.to_le_bytes());
        assert_eq!(
            r.take(),
            vec![
                RouteCall::SetRoutes(vec![VectorRoute {
                    vector: 0,
                    message: MsiMessage {
                        address: 0xfee0_0000,
                        data: 0x31
                    }
                }]),
                RouteCall::Enable(vec![0]),
            ]
        );
        // Writes past the 32-bit capability's end are ignored.
        write(&mut m, &mut r, 0x0a, &[0xff; 4]);
        assert_eq!(m.message(0).data, 0x31);
    }
}
