export * from "./ata.ts";
export * from "./bmdma.ts";
export * from "./channel.ts";
export * from "./commands.ts";
export * from "./device.ts";
export * from "./identify.ts";
export * from "./piix.ts";
