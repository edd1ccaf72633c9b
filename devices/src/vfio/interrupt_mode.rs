//! MSI and MSI-X of one passthrough function are never armed together. The PCI spec (Local
//! Bus 3.0, 6.8.2.3, MSI-X Enable) leaves a function with both enable bits set undefined, and
//! VFIO gives a device one interrupt mode at a time. Conduit's rule: MSI-X takes precedence.
//! A guest enabling MSI-X while MSI is on gets MSI turned off first (its enable bit then
//! reads 0); a guest enabling MSI while MSI-X is on has that enable bit dropped (it reads
//! 0). Both are logged as warnings. (QEMU lets the enable written last win on the host and
//! shows both bits set to the guest; Linux itself refuses to enable one while the other is
//! on.) These helpers look at the control word's bits inside a config write.

/// Bit number of MSI-X Enable in the MSI-X message control word.
pub const MSIX_ENABLE_BIT: u16 = 15;
/// Bit number of MSI Enable in the MSI message control word.
pub const MSI_ENABLE_BIT: u16 = 0;

/// The byte of `data` (written at `offset`) that holds `bit` of the 16-bit register at
/// `reg`, and the bit's mask within that byte.
fn locate(offset: u16, len: usize, reg: u16, bit: u16) -> Option<(usize, u8)> {
    let byte = reg + bit / 8;
    let at = usize::from(byte.checked_sub(offset)?);
    (at < len).then_some((at, 1 << (bit % 8)))
}

/// The value a write of `data` at `offset` gives `bit` of the 16-bit register at `reg`;
/// `None` when the write does not cover that bit.
pub fn written_bit(offset: u16, data: &[u8], reg: u16, bit: u16) -> Option<bool> {
    locate(offset, data.len(), reg, bit).map(|(at, mask)| data[at] & mask != 0)
}

/// `data` with `bit` of the 16-bit register at `reg` cleared, if the write covers it.
pub fn without_bit(offset: u16, data: &[u8], reg: u16, bit: u16) -> Vec<u8> {
    let mut out = data.to_vec();
    if let Some((at, mask)) = locate(offset, data.len(), reg, bit) {
        out[at] &= !mask;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTL: u16 = 0x72; // control word of a capability at 0x70

    #[test]
    fn finds_the_enable_bits_in_any_write_shape() {
        // MSI-X Enable is bit 7 of the control word's high byte (0x73).
        assert_eq!(
            written_bit(0x70, &[0x11, 0, 0, 0x80], CTL, MSIX_ENABLE_BIT),
            Some(true)
        );
        assert_eq!(
            written_bit(0x72, &[0xff, 0x7f], CTL, MSIX_ENABLE_BIT),
            Some(false)
        );
        assert_eq!(written_bit(0x73, &[0x80], CTL, MSIX_ENABLE_BIT), Some(true));
        assert_eq!(written_bit(0x72, &[0x80], CTL, MSIX_ENABLE_BIT), None);
        assert_eq!(written_bit(0x74, &[0xff; 4], CTL, MSIX_ENABLE_BIT), None);
        // MSI Enable is bit 0 of the low byte (0x72).
        assert_eq!(
            written_bit(0x70, &[0x05, 0, 0x81, 0], CTL, MSI_ENABLE_BIT),
            Some(true)
        );
        assert_eq!(
            written_bit(0x72, &[0x80, 0x01], CTL, MSI_ENABLE_BIT),
            Some(false)
        );
        assert_eq!(written_bit(0x73, &[0x01], CTL, MSI_ENABLE_BIT), None);
    }

    #[test]
    fn drops_only_the_enable_bit() {
        assert_eq!(
            without_bit(0x70, &[0x05, 0x80, 0x81, 0x01], CTL, MSI_ENABLE_BIT),
            [0x05, 0x80, 0x80, 0x01]
        );
        assert_eq!(
            without_bit(0x72, &[0x01, 0x00], CTL, MSI_ENABLE_BIT),
            [0x00, 0x00]
        );
        // Not covered: unchanged.
        assert_eq!(
            without_bit(0x74, &[0xff; 4], CTL, MSI_ENABLE_BIT),
            [0xff; 4]
        );
        assert_eq!(
            without_bit(0x72, &[0xff, 0xff], CTL, MSIX_ENABLE_BIT),
            [0xff, 0x7f]
        );
    }
}
