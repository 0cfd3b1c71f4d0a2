"""Print an ARM /proc/cpuinfo for the CPU that qemu-aarch64 emulates (QEMU_CPU).

qemu-user 7.2 passes the host's x86 /proc/cpuinfo through, and LiteRT's CPU detection
crashes on it in Interpreter(). This runs under the emulated Python: the Features line is
read from the auxiliary vector qemu gives the program (AT_HWCAP, AT_HWCAP2), so it names
exactly the instructions qemu emulates; the CPU part numbers come from the table below.
Usage: QEMU_CPU=cortex-a76 qemu-aarch64-static -L ROOT ROOT/usr/bin/python3.11 cpuinfo.py N
"""
import os
import struct
import sys

# QEMU_CPU -> (what it stands for, MIDR variant, part, revision) as the real core reports
CPUS = {"cortex-a72": ("Raspberry Pi 4's Cortex-A72", "0x0", "0xd08", 3),
        "cortex-a76": ("Raspberry Pi 5's Cortex-A76", "0x4", "0xd0b", 1),
        "neoverse-n1": ("Neoverse-N1 (the A76's server sibling)", "0x3", "0xd0c", 1)}
# Linux arch/arm64/include/uapi/asm/hwcap.h, bit order; names as /proc/cpuinfo prints them
HWCAP = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm "
         "jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc "
         "flagm ssbs sb paca pacg").split()
HWCAP2 = ("dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm "
          "svef32mm svef64mm svebf16 i8mm bf16 dgh rng bti mte").split()
AT_HWCAP, AT_HWCAP2 = 16, 26


def features() -> list[str]:
    with open("/proc/self/auxv", "rb") as fh:
        data = fh.read()
    auxv = dict(struct.iter_unpack("<QQ", data[: len(data) // 16 * 16]))
    return ([n for i, n in enumerate(HWCAP) if auxv.get(AT_HWCAP, 0) >> i & 1]
            + [n for i, n in enumerate(HWCAP2) if auxv.get(AT_HWCAP2, 0) >> i & 1])


def main() -> None:
    cpu = os.environ.get("QEMU_CPU", "")
    if cpu not in CPUS:
        sys.exit(f"error: QEMU_CPU={cpu!r}: give one of {', '.join(CPUS)} "
                 "(never max: qemu 7.2's SME emulation makes XNNPACK's int8 silently wrong)")
    name, variant, part, revision = CPUS[cpu]
    flags = " ".join(features())
    for i in range(int(sys.argv[1]) if len(sys.argv) > 1 else 1):
        print(f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {flags}\n"
              f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: {variant}\n"
              f"CPU part\t: {part}\nCPU revision\t: {revision}\n")
    print(f"Model\t\t: qemu-aarch64 {cpu}, emulating the {name}")


if __name__ == "__main__":
    main()
