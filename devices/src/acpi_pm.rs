//! The ACPI fixed-hardware PM1a registers (event block: status + enable; control block).
//!
//! Linux powers off by writing SLP_TYP (the value of the DSDT's `_S5_` package) with SLP_EN
//! into PM1a_CNT; the fixed-feature power button is PWRBTN_STS/PWRBTN_EN raising the SCI.

use crate::bus::BusDevice;
use crate::trigger::EventFdTrigger;

/// Event block (4 bytes) followed by the control block (2 bytes), one device.
pub const PM1_BLOCK_LEN: u64 = 6;
/// SLP_TYP value our DSDT's `_S5_` package declares.
pub const S5_SLP_TYP: u16 = 5;

const PWRBTN: u16 = 1 << 8;
const SCI_EN: u16 = 1;
const SLP_EN: u16 = 1 << 13;
const SLP_TYP_SHIFT: u16 = 10;

/// PM1a status/enable/control with the power-button and sleep actions.
pub struct AcpiPm {
    status: u16,
    enable: u16,
    control: u16,
    sci: EventFdTrigger,
    poweroff: EventFdTrigger,
}

impl AcpiPm {
    /// Registers that raise `sci` for enabled events and fire `poweroff` on entry to S5.
    pub fn new(sci: EventFdTrigger, poweroff: EventFdTrigger) -> Self {
        Self {
            status: 0,
            enable: 0,
            control: SCI_EN,
            sci,
            poweroff,
        }
    }

    /// Presses the fixed-feature power button (the guest then shuts down cleanly).
    pub fn press_power_button(&mut self) {
        self.status |= PWRBTN;
        self.raise_sci_if_pending();
    }

    fn raise_sci_if_pending(&self) {
        if self.status & self.enable & PWRBTN != 0 {
            if let Err(e) = vm_superio::Trigger::trigger(&self.sci) {
                log::error!("ACPI PM: cannot raise the SCI: {e}");
            }
        }
    }

    fn register(&self, index: u64) -> u16 {
        match index {
            0 => self.status,
            1 => self.enable,
            _ => self.control,
        }
    }

    fn write_register(&mut self, index: u64, value: u16, mask: u16) {
        match index {
            // Status bits are write-one-to-clear.
            0 => self.status &= !(value & mask),
            1 => {
                self.enable = (self.enable & !mask) | (value & mask);
                self.raise_sci_if_pending();
            }
            _ => {
                let v = (self.control & !mask) | (value & mask);
                if v & SLP_EN != 0 && (v >> SLP_TYP_SHIFT) & 7 == S5_SLP_TYP {
                    if let Err(e) = vm_superio::Trigger::trigger(&self.poweroff) {
                        log::error!("ACPI PM: cannot signal the power-off: {e}");
                    }
                }
                // SLP_EN is write-only; SCI_EN stays set (the VM is always in ACPI mode).
                self.control = (v & !SLP_EN) | SCI_EN;
            }
        }
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let at = offset + i as u64;
            *b = if at < PM1_BLOCK_LEN {
                self.register(at / 2).to_le_bytes()[(at % 2) as usize]
            } else {
                0
            };
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        // Gather the bytes per 16-bit register so a word write is one register update.
        let mut i = 0;
        while i < data.len() {
            let at = offset + i as u64;
            if at >= PM1_BLOCK_LEN {
                break;
            }
            let (index, byte) = (at / 2, (at % 2) as usize);
            let mut bytes = [0u8; 2];
            let mut mask = 0u16;
            let mut k = byte;
            while k < 2 && i < data.len() {
                bytes[k] = data[i];
                mask |= 0xff << (8 * k);
                k += 1;
                i += 1;
            }
            self.write_register(index, u16::from_le_bytes(bytes), mask);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    fn pm() -> (AcpiPm, EventFdTrigger, EventFdTrigger) {
        let sci = EventFdTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let off = EventFdTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap());
        (AcpiPm::new(sci.clone(), off.clone()), sci, off)
    }

    #[test]
    fn s5_write_powers_off_other_states_do_not() {
        let (mut pm, _, off) = pm();
        let s1 = (1u16 << 10) | SLP_EN;
        pm.write(0x600, 4, &s1.to_le_bytes());
        assert!(off.event_fd().read().is_err());
        let s5 = (S5_SLP_TYP << 10) | SLP_EN;
        pm.write(0x600, 4, &s5.to_le_bytes());
        assert_eq!(off.event_fd().read().unwrap(), 1);
        let mut d = [0u8; 2];
        pm.read(0x600, 4, &mut d);
        assert_eq!(u16::from_le_bytes(d) & SLP_EN, 0, "SLP_EN reads back as 0");
        assert_eq!(
            u16::from_le_bytes(d) & SCI_EN,
            SCI_EN,
            "always in ACPI mode"
        );
    }

    #[test]
    fn power_button_raises_sci_only_when_enabled_and_status_is_rw1c() {
        let (mut pm, sci, _) = pm();
        pm.press_power_button();
        assert!(sci.event_fd().read().is_err(), "not enabled yet");
        // Enabling with the status already set raises the SCI.
        pm.write(0x600, 2, &PWRBTN.to_le_bytes());
        assert_eq!(sci.event_fd().read().unwrap(), 1);
        let mut d = [0u8; 2];
        pm.read(0x600, 0, &mut d);
        assert_eq!(u16::from_le_bytes(d), PWRBTN);
        pm.write(0x600, 0, &0u16.to_le_bytes());
        pm.read(0x600, 0, &mut d);
        assert_eq!(u16::from_le_bytes(d), PWRBTN, "writing 0 clears nothing");
        pm.write(0x600, 1, &[1]);
        pm.read(0x600, 0, &mut d);
        assert_eq!(
            u16::from_le_bytes(d),
            0,
            "byte write of 1 to the high half clears bit 8"
        );
    }

    #[test]
    fn dword_access_to_the_event_block() {
        let (mut pm, _, _) = pm();
        pm.write(0x600, 0, &[0, 0, 0x00, 0x01]);
        let mut d = [0u8; 4];
        pm.read(0x600, 0, &mut d);
        assert_eq!(d, [0, 0, 0, 1]);
    }
}
