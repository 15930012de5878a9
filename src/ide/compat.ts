/**
 * Compatibility profiles. The default profile, "xenide", follows the standard where QEMU 7.2 departs from it
 * (each departure listed in docs/conformance.md with its clause); "qemu-7.2" reproduces QEMU 7.2's PIIX IDE
 * exactly, departures included (except where QEMU crashes, which stays a clean refusal), so that tests written
 * against QEMU pass unchanged.
 */
export const COMPAT_PROFILES = ["xenide", "qemu-7.2"] as const;
export type CompatProfile = (typeof COMPAT_PROFILES)[number];

export const DEFAULT_COMPAT: CompatProfile = "xenide";
