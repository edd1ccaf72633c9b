//! A minimal CMOS RTC (ports 0x70/0x71): wall-clock time from the host, never "update in
//! progress", so the guest's boot-time clock read cannot spin.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::bus::BusDevice;

/// Index port 0x70, data port 0x71.
pub const RTC_PORT: u16 = 0x70;
/// Two ports.
pub const RTC_PORT_LEN: u64 = 2;

const REG_A: usize = 0x0a;
const REG_B: usize = 0x0b;
const REG_C: usize = 0x0c;
const REG_D: usize = 0x0d;
const REG_CENTURY: usize = 0x32;
/// Register B: 24-hour mode, BCD values.
const B_24H: u8 = 0x02;
/// Register B: binary (not BCD) values.
const B_BINARY: u8 = 0x04;

/// CMOS memory with a clock overlaid on registers 0x00-0x09 and 0x32.
pub struct Rtc {
    index: usize,
    cmos: [u8; 128],
    now: fn() -> u64,
}

impl Default for Rtc {
    fn default() -> Self {
        Self::new()
    }
}

fn host_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl Rtc {
    /// An RTC reading the host clock.
    pub fn new() -> Self {
        Self::with_clock(host_now)
    }

    fn with_clock(now: fn() -> u64) -> Self {
        let mut cmos = [0u8; 128];
        cmos[REG_A] = 0x26; // 32.768 kHz time base, 1024 Hz rate, UIP clear
        cmos[REG_B] = B_24H;
        cmos[REG_D] = 0x80; // battery good
        Self {
            index: 0,
            cmos,
            now,
        }
    }

    fn clock_register(&self, reg: usize) -> Option<u8> {
        let secs = (self.now)();
        let days = (secs / 86_400) as i64;
        let tod = secs % 86_400;
        let (year, month, day) = civil_from_days(days);
        let value = match reg {
            0x00 => tod % 60,
            0x02 => tod / 60 % 60,
            0x04 => tod / 3600,
            0x06 => ((days + 4).rem_euclid(7) + 1) as u64, // 1970-01-01 was a Thursday
            0x07 => u64::from(day),
            0x08 => u64::from(month),
            0x09 => year.rem_euclid(100) as u64,
            REG_CENTURY => (year / 100) as u64,
            _ => return None,
        } as u8;
        Some(if self.cmos[REG_B] & B_BINARY != 0 {
            value
        } else {
            ((value / 10) << 4) | (value % 10)
        })
    }
}

impl BusDevice for Rtc {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        let Some(d) = data.first_mut() else { return };
        *d = match offset {
            0 => self.index as u8,
            1 => match self.index {
                REG_C => 0, // no interrupt sources; reading clears (nothing to clear)
                i => self.clock_register(i).unwrap_or(self.cmos[i]),
            },
            _ => 0xff,
        };
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        match offset {
            // Bit 7 of the index port is the NMI mask: ignore it.
            0 => self.index = usize::from(v & 0x7f),
            1 => match self.index {
                REG_A => self.cmos[REG_A] = v & 0x7f, // UIP is read-only
                REG_C | REG_D => {}
                i => self.cmos[i] = v,
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(rtc: &mut Rtc, reg: u8) -> u8 {
        rtc.write(0x70, 0, &[reg]);
        let mut d = [0u8];
        rtc.read(0x70, 1, &mut d);
        d[0]
    }

    #[test]
    fn known_instant_in_bcd_and_binary() {
        // 2026-11-28 23:04:33 UTC, a Saturday.
        let mut rtc = Rtc::with_clock(|| 1_795_907_073);
        assert_eq!(read(&mut rtc, 0x00), 0x33);
        assert_eq!(read(&mut rtc, 0x02), 0x04);
        assert_eq!(read(&mut rtc, 0x04), 0x23);
        assert_eq!(read(&mut rtc, 0x06), 0x07);
        assert_eq!(read(&mut rtc, 0x07), 0x28);
        assert_eq!(read(&mut rtc, 0x08), 0x11);
        assert_eq!(read(&mut rtc, 0x09), 0x26);
        assert_eq!(read(&mut rtc, 0x32), 0x20);
        assert_eq!(read(&mut rtc, 0x0a) & 0x80, 0, "never update-in-progress");
        rtc.write(0x70, 0, &[0x0b]);
        rtc.write(0x70, 1, &[B_24H | B_BINARY]);
        assert_eq!(read(&mut rtc, 0x09), 26);
        assert_eq!(read(&mut rtc, 0x07), 28);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn cmos_memory_is_plain_storage() {
        let mut rtc = Rtc::new();
        rtc.write(0x70, 0, &[0x80 | 0x40]);
        rtc.write(0x70, 1, &[0x5a]);
        assert_eq!(read(&mut rtc, 0x40), 0x5a);
    }
}
