//! COM1: a 16550A UART (vm-superio) whose interrupt is an eventfd the vmm feeds to KVM as an
//! irqfd, so raising IRQ 4 costs the vCPU thread one eventfd write.

use std::io::{self, Write};

use vm_superio::serial::NoEvents;
use vm_superio::Serial;

use crate::bus::BusDevice;
use crate::trigger::EventFdTrigger;

/// The UART's eight registers.
pub const SERIAL_PORT_LEN: u64 = 8;

/// A 16550A serial port writing guest output to `out`.
pub struct SerialDevice {
    uart: Serial<EventFdTrigger, NoEvents, Box<dyn Write + Send>>,
}

impl SerialDevice {
    /// A UART raising `irq` and writing the guest's output to `out`.
    pub fn new(irq: EventFdTrigger, out: Box<dyn Write + Send>) -> Self {
        Self {
            uart: Serial::new(irq, out),
        }
    }

    /// Queues host input for the guest; returns how many bytes fitted in the receive FIFO.
    pub fn enqueue_input(&mut self, input: &[u8]) -> io::Result<usize> {
        let room = self.uart.fifo_capacity().min(input.len());
        if room == 0 {
            return Ok(0);
        }
        self.uart
            .enqueue_raw_bytes(&input[..room])
            .map_err(|e| io::Error::other(format!("serial input: {e:?}")))
    }

    /// Free space in the receive FIFO.
    pub fn input_capacity(&self) -> usize {
        self.uart.fifo_capacity()
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        if data.len() != 1 || offset >= SERIAL_PORT_LEN {
            data.fill(0xff);
            return;
        }
        data[0] = self.uart.read(offset as u8);
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        if data.len() != 1 || offset >= SERIAL_PORT_LEN {
            return;
        }
        // A failing output (closed stdout, full disk) must not stop the guest: log and go on.
        if let Err(e) = self.uart.write(offset as u8, data[0]) {
            log::warn!("serial output: {e:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_reaches_the_writer_and_input_raises_the_irq() {
        let irq = EventFdTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let sink = Sink::default();
        let mut uart = SerialDevice::new(irq.clone(), Box::new(sink.clone()));
        for b in b"hi" {
            uart.write(0x3f8, 0, &[*b]);
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"hi");
        // Enable the "received data available" interrupt (IER bit 0), then feed input.
        uart.write(0x3f8, 1, &[1]);
        assert_eq!(uart.enqueue_input(b"x").unwrap(), 1);
        assert_eq!(irq.event_fd().read().unwrap(), 1);
        let mut d = [0u8];
        uart.read(0x3f8, 0, &mut d);
        assert_eq!(d[0], b'x');
    }

    #[test]
    fn wide_accesses_are_ignored() {
        let irq = EventFdTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let sink = Sink::default();
        let mut uart = SerialDevice::new(irq, Box::new(sink.clone()));
        uart.write(0x3f8, 0, &[1, 2]);
        let mut d = [0u8; 2];
        uart.read(0x3f8, 0, &mut d);
        assert_eq!(d, [0xff, 0xff]);
        assert!(sink.0.lock().unwrap().is_empty());
    }
}
