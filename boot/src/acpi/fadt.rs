//! FADT: the legacy (not hardware-reduced) fixed-hardware model the vmm's PM device
//! implements — PM1a event/control blocks on I/O ports, SCI on IRQ 9, already in ACPI mode.

use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::Aml;

use super::{AcpiConfig, OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::layout::{PM1A_CNT_PORT, PM1A_EVT_PORT, SCI_IRQ};

/// PM1 event block: status (2 bytes) + enable (2 bytes).
const PM1_EVT_LEN: u8 = 4;
/// PM1 control block: one 16-bit register.
const PM1_CNT_LEN: u8 = 2;
/// Latencies above 100 / 1000 us mean "C2 / C3 not supported".
const P_LVL2_LAT_NONE: u16 = 101;
const P_LVL3_LAT_NONE: u16 = 1001;

/// IA-PC boot architecture flags.
const IAPC_8042: u16 = 1 << 1;
const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;
const IAPC_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;

fn io_register(port: u16, len: u8) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        len * 8,
        0,
        AccessSize::WordAccess,
        u64::from(port),
    )
}

/// Builds the FADT pointing at the DSDT (32-bit and X_ fields) and the FACS.
///
/// Reset: no RESET_REG (`RESET_REG_SUP` clear). Linux's default reboot order then falls
/// back to the keyboard controller, i.e. 0xFE written to port 0x64, which the vmm's i8042
/// emulates as the reset line (that path does not look at the IAPC_BOOT_ARCH 8042 flag).
///
/// Power button: fixed-feature (`PWR_BUTTON` clear), reported through PWRBTN_STS (bit 8)
/// of PM1 status. Sleep button: absent (`SLP_BUTTON` set). No PM timer, no GPE blocks.
pub(super) fn build(cfg: &AcpiConfig, dsdt: u64, facs: u64) -> Vec<u8> {
    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .flag(Flags::Wbinvd)
        .flag(Flags::ProcC1)
        .flag(Flags::SlpButton)
        .flag(Flags::FixRtc);
    fadt.firmware_ctrl = (facs as u32).into();
    fadt.dsdt = (dsdt as u32).into();
    fadt.x_dsdt = dsdt.into();
    fadt.sci_int = (SCI_IRQ as u16).into();
    // SMI_CMD = 0: no SMM handshake, the platform is always in ACPI mode.
    fadt.smi_cmd = 0.into();
    fadt.pm1a_evt_blk = u32::from(PM1A_EVT_PORT).into();
    fadt.pm1a_cnt_blk = u32::from(PM1A_CNT_PORT).into();
    fadt.pm1_evt_len = PM1_EVT_LEN;
    fadt.pm1_cnt_len = PM1_CNT_LEN;
    fadt.x_pm1a_evt_blk = io_register(PM1A_EVT_PORT, PM1_EVT_LEN);
    fadt.x_pm1a_cnt_blk = io_register(PM1A_CNT_PORT, PM1_CNT_LEN);
    fadt.p_lvl2_lat = P_LVL2_LAT_NONE.into();
    fadt.p_lvl3_lat = P_LVL3_LAT_NONE.into();
    let mut boot_arch = IAPC_VGA_NOT_PRESENT;
    if cfg.i8042 {
        boot_arch |= IAPC_8042;
    }
    if !cfg.cmos_rtc {
        boot_arch |= IAPC_CMOS_RTC_NOT_PRESENT;
    }
    fadt.iapc_boot_arch = boot_arch.into();
    let mut bytes = Vec::new();
    fadt.finalize().to_aml_bytes(&mut bytes);
    bytes
}
