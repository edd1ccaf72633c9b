//! The i8042 keyboard controller, reduced to what a PC guest uses it for: the CPU reset line
//! (command 0xFE on port 0x64). Linux reboots through it.

use vm_superio::I8042Device;

use crate::bus::BusDevice;
use crate::trigger::EventFdTrigger;

/// Base port (0x60); the command port 0x64 is at offset 4.
pub const I8042_PORT: u16 = 0x60;
/// Ports 0x60..=0x64.
pub const I8042_PORT_LEN: u64 = 5;

/// The controller; `reset` fires when the guest pulses the reset line.
pub struct I8042 {
    dev: I8042Device<EventFdTrigger>,
}

impl I8042 {
    /// A controller that signals `reset` on a CPU reset command.
    pub fn new(reset: EventFdTrigger) -> Self {
        Self {
            dev: I8042Device::new(reset),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (Some(d), Ok(off)) = (data.first_mut(), u8::try_from(offset)) {
            *d = self.dev.read(off);
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        if let (Some(v), Ok(off)) = (data.first(), u8::try_from(offset)) {
            if let Err(e) = self.dev.write(off, *v) {
                log::error!("i8042: cannot signal the reset: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    #[test]
    fn reset_command_fires_the_event() {
        let reset = EventFdTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let mut kbd = I8042::new(reset.clone());
        kbd.write(0x60, 4, &[0xaa]);
        assert!(
            reset.event_fd().read().is_err(),
            "other commands do nothing"
        );
        kbd.write(0x60, 4, &[0xfe]);
        assert_eq!(reset.event_fd().read().unwrap(), 1);
    }
}
