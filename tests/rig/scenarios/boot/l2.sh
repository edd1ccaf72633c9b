# L2 side: the guest sees the vCPUs it was given (rig.cpus=), the PCI host
# bridge and the ACPI tables a PCIe machine needs.
rig_expect cpu-count "$RIG_CPUS" "$(nproc)"
if [ "$RIG_CPUS" = 1 ]; then online=0; else online=0-$((RIG_CPUS - 1)); fi
rig_expect cpus-online "$online" "$(cat /sys/devices/system/cpu/online)"
rig_check host-bridge "0000:00:00.0 in /sys/bus/pci/devices" [ -e /sys/bus/pci/devices/0000:00:00.0 ]
rig_check acpi-mcfg "/sys/firmware/acpi/tables/MCFG" [ -e /sys/firmware/acpi/tables/MCFG ]
rig_check acpi-dsdt "/sys/firmware/acpi/tables/DSDT" [ -e /sys/firmware/acpi/tables/DSDT ]
