export * from "./accounting.ts";
export * from "./bus.ts";
export * from "./hypervisor.ts";
export * from "./ioreq.ts";
export * from "./ioreq-server.ts";
export * from "./irq.ts";
export * from "./memory.ts";
export * from "./trace.ts";
