import { linuxSuite } from "../support/guests/linux-suite.ts";

linuxSuite("dma");
