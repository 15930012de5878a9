/** The machine layer: descriptions, the builder, the PC, PV disk assembly, disk paths and transports. */
export * from "./description.ts";
export * from "./builder.ts";
export * from "./pc.ts";
export * from "./pci-host.ts";
export * from "./pv.ts";
export * from "./disk-path.ts";
export * from "./ioreq-transport.ts";
export * from "./worker-transport.ts";
