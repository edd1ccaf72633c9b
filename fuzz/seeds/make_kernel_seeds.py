#!/usr/bin/env python3
"""Writes the kernel_loader seeds: small synthetic images (the layouts of boot's
kernel::testimg) and the first page of the rig's real bzImage and vmlinux when present.

    python3 fuzz/seeds/make_kernel_seeds.py [RIG_KERNEL_DIR]   (default target/rig/kernel)
"""
import glob
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "kernel_loader")


def put(buf, at, data):
    buf[at:at + len(data)] = data


def bzimage(payload):
    """Boot protocol 2.15, 64-bit entry, relocatable, 4 setup sectors, `payload` bytes."""
    setup_sects = 4
    setup = (setup_sects + 1) * 512
    f = bytearray(setup + payload)
    f[0x1F1] = setup_sects
    put(f, 0x1F4, struct.pack("<I", (payload + 15) // 16))  # syssize
    put(f, 0x1FE, struct.pack("<H", 0xAA55))
    put(f, 0x202, b"HdrS")
    put(f, 0x206, struct.pack("<H", 0x020F))
    f[0x211] = 0x01  # LOADED_HIGH
    put(f, 0x214, struct.pack("<I", 0x100000))
    put(f, 0x22C, struct.pack("<I", 0x7FFFFFFF))  # initrd_addr_max
    put(f, 0x230, struct.pack("<I", 0x200000))  # kernel_alignment
    f[0x234] = 1  # relocatable
    put(f, 0x236, struct.pack("<H", 0x0003))  # XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G
    put(f, 0x238, struct.pack("<I", 2047))  # cmdline_size
    put(f, 0x258, struct.pack("<Q", 0x1000000))  # pref_address
    put(f, 0x260, struct.pack("<I", 0x800000))  # init_size
    for i in range(payload):
        f[setup + i] = i % 251
    return bytes(f)


def elf(paddr, payload, pvh_entry=None):
    """ELF64 x86-64: one PT_LOAD at `paddr`, and a PT_NOTE with a Xen PVH entry note."""
    phnum = 2 if pvh_entry is not None else 1
    data_off = 0x1000
    f = bytearray(data_off + payload)
    put(f, 0, b"\x7fELF\x02\x01\x01")
    put(f, 16, struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, paddr, 64, 0, 0, 64, 56, phnum, 0, 0, 0))
    put(f, 64, struct.pack("<IIQQQQQQ", 1, 7, data_off, 0xFFFFFFFF80000000 + paddr, paddr,
                           payload, 2 * payload, 0x1000))
    if pvh_entry is not None:
        note = b""
        for name, kind, desc in ((b"GNU\0", 3, bytes(range(1, 9))),
                                 (b"Xen\0", 18, struct.pack("<I", pvh_entry))):
            note += struct.pack("<III", len(name), len(desc), kind) + name + desc
        put(f, 0x200, note)
        put(f, 64 + 56, struct.pack("<IIQQQQQQ", 4, 0, 0x200, 0, 0, len(note), len(note), 4))
    for i in range(payload):
        f[data_off + i] = i % 253
    return bytes(f)


def write(name, data):
    with open(os.path.join(OUT, name), "wb") as out:
        out.write(data)
    print(f"{name}: {len(data)} bytes")


def main():
    os.makedirs(OUT, exist_ok=True)
    write("bzimage-min", bzimage(0x400))
    write("elf-pvh", elf(0x1000000, 0x100, 0x1000040))
    write("elf-plain", elf(0x1000000, 0x100))
    rig = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "../../target/rig/kernel")
    for path in sorted(glob.glob(os.path.join(rig, "boot/vmlinuz-*")))[:1]:
        with open(path, "rb") as k:
            write("bzimage-debian-head", k.read(4096))
    vmlinux = os.path.join(rig, "vmlinux")
    if os.path.exists(vmlinux):
        with open(vmlinux, "rb") as k:
            write("vmlinux-debian-head", k.read(4096))


if __name__ == "__main__":
    main()
