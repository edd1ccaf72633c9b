//! The expansion ROM a passthrough device shows the guest: the device's own (read from the
//! VFIO ROM region), an image from a file (`rom=PATH`), or none (`rom=off`).
//!
//! A file's ROM BAR is the file size rounded up to a power of two, at least 2 KiB (the
//! smallest ROM BAR); reads past the end of the file within the BAR return 0xff, as an
//! erased flash part does. Reads trap (the ROM is small and read once or twice by the
//! guest's firmware or driver), so no memslot is spent on it.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest ROM file accepted: 16 MiB, the largest expansion ROM BAR of real devices and far
/// above any option ROM image (the PCI data structure counts at most 32 MiB per image).
pub const MAX_ROM_FILE_SIZE: u64 = 16 << 20;
/// Smallest expansion ROM BAR (its address bits start at bit 11).
pub const MIN_ROM_BAR_SIZE: u64 = 2048;

/// Which expansion ROM a passthrough device has.
#[derive(Debug, Default)]
pub enum RomChoice {
    /// The device's own ROM, if it has one.
    #[default]
    Device,
    /// No ROM, even if the device has one.
    Hidden,
    /// This image instead.
    Image(RomImage),
}

/// A ROM file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RomError {
    /// The file cannot be read.
    #[error("{device}: cannot read the ROM file {path}: {source}")]
    Read {
        /// Device address.
        device: String,
        /// The file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The path is not a regular file.
    #[error("{device}: the ROM file {path} is not a regular file")]
    NotAFile {
        /// Device address.
        device: String,
        /// The file.
        path: PathBuf,
    },
    /// The file is empty.
    #[error("{device}: the ROM file {path} is empty")]
    Empty {
        /// Device address.
        device: String,
        /// The file.
        path: PathBuf,
    },
    /// The file is larger than [`MAX_ROM_FILE_SIZE`].
    #[error("{device}: the ROM file {path} is {size} bytes, more than the limit of {limit} bytes (16 MiB)")]
    TooLarge {
        /// Device address.
        device: String,
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// [`MAX_ROM_FILE_SIZE`].
        limit: u64,
    },
}

/// Checks that `path` can be a ROM file for `device` (a regular file of 1 byte to
/// [`MAX_ROM_FILE_SIZE`]) without reading it; returns its size.
pub fn check_rom_file(device: &str, path: &Path) -> Result<u64, RomError> {
    let meta = std::fs::metadata(path).map_err(|source| RomError::Read {
        device: device.to_string(),
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(RomError::NotAFile {
            device: device.to_string(),
            path: path.to_path_buf(),
        });
    }
    check_size(device, path, meta.len())
}

fn check_size(device: &str, path: &Path, size: u64) -> Result<u64, RomError> {
    if size == 0 {
        return Err(RomError::Empty {
            device: device.to_string(),
            path: path.to_path_buf(),
        });
    }
    if size > MAX_ROM_FILE_SIZE {
        return Err(RomError::TooLarge {
            device: device.to_string(),
            path: path.to_path_buf(),
            size,
            limit: MAX_ROM_FILE_SIZE,
        });
    }
    Ok(size)
}

/// A ROM image from a file, as the guest reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RomImage {
    bytes: Vec<u8>,
    bar_size: u64,
}

impl RomImage {
    /// Reads the ROM file `path` for `device`.
    pub fn load(device: &str, path: &Path) -> Result<Self, RomError> {
        check_rom_file(device, path)?;
        let read_err = |source| RomError::Read {
            device: device.to_string(),
            path: path.to_path_buf(),
            source,
        };
        let mut bytes = Vec::new();
        // Read one byte past the limit, so a file that grew since the check is caught.
        std::fs::File::open(path)
            .map_err(read_err)?
            .take(MAX_ROM_FILE_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        check_size(device, path, bytes.len() as u64)?;
        Ok(Self::from_bytes(bytes))
    }

    /// An image of 1 to [`MAX_ROM_FILE_SIZE`] bytes (checked by [`Self::load`]).
    fn from_bytes(bytes: Vec<u8>) -> Self {
        let bar_size = (bytes.len() as u64)
            .next_power_of_two()
            .max(MIN_ROM_BAR_SIZE);
        Self { bytes, bar_size }
    }

    /// Size of the ROM BAR: the image size rounded up to a power of two, at least 2 KiB.
    pub fn bar_size(&self) -> u64 {
        self.bar_size
    }

    /// Size of the image.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Never true: an image has at least one byte.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// A guest read of the ROM BAR at `offset`: the image's bytes, 0xff past its end.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok())
                .and_then(|o| self.bytes.get(o))
                .copied()
                .unwrap_or(0xff);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pci::{ConfigSpace, PciHeader, ROM_BAR_INDEX};

    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, bytes: &[u8]) -> Self {
            let p = std::env::temp_dir().join(format!("conduit-rom-{}-{name}", std::process::id()));
            std::fs::write(&p, bytes).unwrap();
            TempFile(p)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn bar_size_is_a_power_of_two_of_at_least_2_kib() {
        for (len, bar) in [
            (1, 2048),
            (2048, 2048),
            (2049, 4096),
            (3072, 4096),
            (65536, 65536),
            (196_608, 262_144),
            (16 << 20, 16 << 20),
        ] {
            let r = RomImage::from_bytes(vec![0; len]);
            assert_eq!(r.bar_size(), bar, "{len} bytes");
            assert_eq!(r.len(), len as u64);
        }
    }

    #[test]
    fn reads_return_the_file_then_0xff() {
        let f = TempFile::new("read", &[0x55, 0xaa, 0x06, 0x11, 0x22]);
        let r = RomImage::load("0000:00:06.0", &f.0).unwrap();
        let mut d = [0u8; 4];
        r.read(0, &mut d);
        assert_eq!(d, [0x55, 0xaa, 0x06, 0x11]);
        r.read(3, &mut d);
        assert_eq!(d, [0x11, 0x22, 0xff, 0xff]);
        r.read(2044, &mut d);
        assert_eq!(d, [0xff; 4]);
        r.read(u64::MAX - 1, &mut d);
        assert_eq!(d, [0xff; 4]);
    }

    #[test]
    fn bad_files_name_the_file_the_device_and_the_limit() {
        let dev = "0000:00:06.0";
        let e = RomImage::load(dev, Path::new("/nonexistent/rom.bin")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("0000:00:06.0: cannot read the ROM file /nonexistent/rom.bin: "),
            "{e}"
        );
        let empty = TempFile::new("empty", b"");
        let e = RomImage::load(dev, &empty.0).unwrap_err().to_string();
        assert!(
            e.starts_with("0000:00:06.0: the ROM file ") && e.ends_with(" is empty"),
            "{e}"
        );
        let big = TempFile::new("big", b"");
        std::fs::File::options()
            .write(true)
            .open(&big.0)
            .unwrap()
            .set_len(MAX_ROM_FILE_SIZE + 1)
            .unwrap();
        let e = RomImage::load(dev, &big.0).unwrap_err().to_string();
        assert!(
            e.contains("is 16777217 bytes, more than the limit of 16777216 bytes (16 MiB)")
                && e.contains(&big.0.display().to_string()),
            "{e}"
        );
        let e = RomImage::load(dev, Path::new("/")).unwrap_err().to_string();
        assert_eq!(e, "0000:00:06.0: the ROM file / is not a regular file");
        assert_eq!(
            check_rom_file(dev, &TempFile::new("ok", &[1; 3000]).0).unwrap(),
            3000
        );
    }

    #[test]
    fn the_rom_bar_sizes_and_enables_like_hardware() {
        let r = RomImage::from_bytes(vec![0x55; 3072]);
        let mut cs = ConfigSpace::new(&PciHeader::default());
        cs.add_rom(r.bar_size(), 0xc100_0000).unwrap();
        // Sizing: all-ones to the address bits (enable off) reads back the size mask.
        assert!(cs.write(0x30, &0xffff_f800u32.to_le_bytes()).is_empty());
        let mut v = [0u8; 4];
        cs.read(0x30, &mut v);
        assert_eq!(u32::from_le_bytes(v), 0xffff_f000, "4 KiB ROM BAR");
        // Back at an address with the enable bit and memory decode on: the ROM moves there.
        cs.write(0x04, &[0x02, 0x00]);
        let out = cs.write(0x30, &0xc100_2001u32.to_le_bytes());
        assert_eq!(out.bar_moves.len(), 1);
        assert_eq!(out.bar_moves[0].index, ROM_BAR_INDEX);
        assert_eq!(out.bar_moves[0].new_addr, 0xc100_2000);
        assert_eq!(out.bar_moves[0].size, 4096);
    }
}
