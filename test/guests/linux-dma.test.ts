import { linuxSuite } from "./support/linux-suite.ts";

linuxSuite("dma");
